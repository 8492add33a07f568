//! Python's text semantics where the brain's file formats and algorithms depend on them: how
//! `str.splitlines()` and `str.split()` cut text, and how `round(x, n)` rounds. A brain written by
//! the Python SDK must read the same here, so these follow Python, not Rust's `lines()` and
//! `split_whitespace()`, which cut at fewer characters.
//!
//! Pure functions; nothing here knows what a lesson or a route is.

/// The line boundaries of `str.splitlines()`: `\r\n` counts as one.
fn is_line_boundary(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// The lines of `text` as `str.splitlines()` gives them: without their line breaks, and no empty
/// last line for text that ends in a break.
pub fn splitlines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !is_line_boundary(c) {
            continue;
        }
        lines.push(&text[start..at]);
        let mut end = at + c.len_utf8();
        if c == '\r' {
            if let Some(&(next_at, '\n')) = chars.peek() {
                chars.next();
                end = next_at + 1;
            }
        }
        start = end;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Whether `str.split()` cuts at `c`: Unicode whitespace, plus the separators `\x1c`–`\x1f`
/// that Python counts as whitespace and Rust does not.
pub fn is_whitespace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// The words of `text` as `str.split()` with no argument gives them.
pub fn split_whitespace(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_whitespace).filter(|word| !word.is_empty())
}

/// `text` without leading and trailing Python whitespace, as `str.strip()`.
pub fn strip(text: &str) -> &str {
    text.trim_matches(is_whitespace)
}

/// `round(x, digits)` as Python computes it: correctly rounded, half to even, on the exact
/// binary value of `x`. Formatting with a precision rounds the exact value the same way, so the
/// decimal text is parsed back rather than scaled by a power of ten (`(x * 100).round() / 100`
/// differs on values such as 0.285, whose binary value lies below the half).
pub fn round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_cuts_where_python_does() {
        let cases: [(&str, &[&str]); 9] = [
            ("", &[]),
            ("a", &["a"]),
            ("a\n", &["a"]),
            ("a\n\nb", &["a", "", "b"]),
            ("a\r\nb\rc", &["a", "b", "c"]),
            ("a\r\rb", &["a", "", "b"]),
            (
                "a\u{0b}b\u{0c}c\u{1c}d\u{1d}e\u{1e}f",
                &["a", "b", "c", "d", "e", "f"],
            ),
            ("a\u{85}b\u{2028}c\u{2029}d", &["a", "b", "c", "d"]),
            // Not boundaries: the unit separator and a tab.
            ("a\u{1f}b\tc", &["a\u{1f}b\tc"]),
        ];
        for (text, lines) in cases {
            assert_eq!(splitlines(text), lines, "{text:?}");
        }
    }

    #[test]
    fn split_cuts_at_python_whitespace_including_the_separators() {
        let words: Vec<&str> = split_whitespace(" a\u{1f}b\u{1c}c \u{a0}d\t\ne ").collect();
        assert_eq!(words, ["a", "b", "c", "d", "e"]);
        assert_eq!(split_whitespace("   ").count(), 0);
        assert_eq!(strip("\u{1e} x y \n"), "x y");
    }

    #[test]
    fn round_is_half_even_on_the_binary_value() {
        let cases = [
            (0.285, 2, 0.28), // 0.28499999999999998
            (0.125, 2, 0.12), // exact half: to even
            (0.375, 2, 0.38),
            (2.675, 2, 2.67),
            (0.5, 0, 0.0),
            (1.5, 0, 2.0),
            (0.123456, 4, 0.1235),
            (-0.125, 2, -0.12),
        ];
        for (x, digits, rounded) in cases {
            assert_eq!(round(x, digits), rounded, "round({x}, {digits})");
        }
        assert!(round(f64::NAN, 2).is_nan());
    }
}

//! Python's `repr()` text for the few value types `/brain-recall`'s `context` prints: 0.6.0
//! answers with the repr of each result dict, and plugins may already paste those lines into
//! prompts, so the text is kept byte for byte (spec §5.5, §6.8).
//!
//! [`PyValue`] is a value as Python would hold it; its `Display` is its repr:
//!
//! - `None`, `True`, `False`; integers in decimal;
//! - floats as Python's shortest round-trip repr: positional between 1e-4 and 1e16
//!   (`0.0001`, `1.0`, `1000000000000000.0`), scientific outside with a sign and at least two
//!   exponent digits (`1.4e-06`, `1e+16`), and `inf`, `-inf`, `nan`;
//! - strings in single quotes, or double quotes when they hold `'` and no `"`; `\\`, `\t`,
//!   `\n`, `\r` and the quote escaped; other control characters and non-printable characters
//!   as `\xNN`, `\uNNNN` or `\UNNNNNNNN`; printable non-ASCII kept as is;
//! - dicts as `{'key': value, ...}` in insertion order.
//!
//! "Printable" is Python's: not of general category Cc, Cf, Cs, Co, Cn, Zl, Zp or Zs (space
//! excepted). The category table is the `unicode-general-category` crate's, a newer Unicode
//! than Python 3.11's 14.0, so a character assigned since then prints here where 0.6.0 escapes
//! it. Nothing here parses repr text or knows what a recall result is.

use std::fmt::{self, Write};

use unicode_general_category::{GeneralCategory, get_general_category};

/// A value as Python holds it, for printing its repr.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `dict` with string keys, in insertion order.
    Dict(Vec<(String, PyValue)>),
}

impl fmt::Display for PyValue {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::None => out.write_str("None"),
            PyValue::Bool(true) => out.write_str("True"),
            PyValue::Bool(false) => out.write_str("False"),
            PyValue::Int(n) => write!(out, "{n}"),
            PyValue::Float(x) => write_float(out, *x),
            PyValue::Str(text) => write_str(out, text),
            PyValue::Dict(items) => {
                out.write_char('{')?;
                for (n, (key, value)) in items.iter().enumerate() {
                    if n > 0 {
                        out.write_str(", ")?;
                    }
                    write_str(out, key)?;
                    write!(out, ": {value}")?;
                }
                out.write_char('}')
            }
        }
    }
}

impl From<&str> for PyValue {
    fn from(text: &str) -> PyValue {
        PyValue::Str(text.to_owned())
    }
}

impl From<String> for PyValue {
    fn from(text: String) -> PyValue {
        PyValue::Str(text)
    }
}

impl From<f64> for PyValue {
    fn from(x: f64) -> PyValue {
        PyValue::Float(x)
    }
}

impl From<i64> for PyValue {
    fn from(n: i64) -> PyValue {
        PyValue::Int(n)
    }
}

/// Writes `x` as Python's `repr(float)`: `nan` and `inf` spelled as repr spells them, finite
/// values as [`super::pyjson::float_repr`] (json.dumps writes floats with repr).
fn write_float(out: &mut impl Write, x: f64) -> fmt::Result {
    if x.is_nan() {
        return out.write_str("nan");
    }
    if x.is_infinite() {
        return out.write_str(if x > 0.0 { "inf" } else { "-inf" });
    }
    out.write_str(&super::pyjson::float_repr(x))
}

/// Writes `text` as Python's `repr(str)`.
fn write_str(out: &mut impl Write, text: &str) -> fmt::Result {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.write_char(quote)?;
    for c in text.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '\t' => out.write_str("\\t")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            c if c == quote => write!(out, "\\{c}")?,
            ' '..='~' => out.write_char(c)?,
            c if !c.is_ascii() && is_printable(c) => out.write_char(c)?,
            c if u32::from(c) <= 0xff => write!(out, "\\x{:02x}", u32::from(c))?,
            c if u32::from(c) <= 0xffff => write!(out, "\\u{:04x}", u32::from(c))?,
            c => write!(out, "\\U{:08x}", u32::from(c))?,
        }
    }
    out.write_char(quote)
}

/// Python's `str.isprintable` for one non-ASCII character.
fn is_printable(c: char) -> bool {
    !matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::SpaceSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected texts are what `python3 -c 'print(repr(x))'` prints (CPython 3.11).
    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (100.0, "100.0"),
            (12.5, "12.5"),
            (1234.5678, "1234.5678"),
            (1.4e-06, "1.4e-06"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e-4 * 1.5, "0.00015000000000000001"),
            (-2.5e-7, "-2.5e-07"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1e22, "1e+22"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.8800000000000001, "0.8800000000000001"),
            (0.3379916797369133, "0.3379916797369133"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (x, repr) in cases {
            assert_eq!(PyValue::Float(x).to_string(), repr, "{x:e}");
        }
    }

    #[test]
    fn strings_print_as_python_repr() {
        let cases = [
            ("", "''"),
            ("plain", "'plain'"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            ("back\\slash", "'back\\\\slash'"),
            ("tab\tnl\ncr\r", "'tab\\tnl\\ncr\\r'"),
            ("\u{0}\u{1f}\u{7f}", "'\\x00\\x1f\\x7f'"),
            ("é中😀", "'é中😀'"),
            (
                "\u{a0}\u{200b}\u{2028}\u{2029}\u{feff}\u{e000}\u{f0000}\u{85}",
                "'\\xa0\\u200b\\u2028\\u2029\\ufeff\\ue000\\U000f0000\\x85'",
            ),
            ("\u{378}", "'\\u0378'"), // unassigned
        ];
        for (text, repr) in cases {
            assert_eq!(PyValue::from(text).to_string(), repr, "{text:?}");
        }
    }

    #[test]
    fn dicts_keep_insertion_order_and_python_words() {
        let dict = PyValue::Dict(vec![
            ("rowid".into(), PyValue::Int(4)),
            ("source".into(), "corrections".into()),
            ("x".into(), PyValue::None),
            ("t".into(), PyValue::Bool(true)),
            ("f".into(), PyValue::Bool(false)),
            ("n".into(), PyValue::Int(-3)),
            ("e".into(), PyValue::Dict(Vec::new())),
            ("it's".into(), 0.5.into()),
        ]);
        assert_eq!(
            dict.to_string(),
            "{'rowid': 4, 'source': 'corrections', 'x': None, 't': True, 'f': False, 'n': -3, \
             'e': {}, \"it's\": 0.5}"
        );
    }
}

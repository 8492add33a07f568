use std::time::Duration;

use super::*;

/// One correction of the shared fixture set, with the class the Python SDK 0.6.0 gave it.
#[derive(serde::Deserialize)]
struct Recorded {
    name: String,
    draft: String,
    #[serde(rename = "final")]
    final_text: String,
    severity: String,
    edit_distance: f64,
}

fn recorded() -> Vec<Recorded> {
    serde_json::from_str(include_str!(
        "../../../tests/data/severity_corrections.json"
    ))
    .unwrap()
}

#[test]
fn every_recorded_correction_gets_the_sdks_class_and_distance() {
    let fixtures = recorded();
    assert!(fixtures.len() >= 30, "{} fixtures", fixtures.len());
    let mut disagreements = Vec::new();
    for fixture in &fixtures {
        let measured = measure(&fixture.draft, &fixture.final_text);
        let expected = Severity::from_name(&fixture.severity).unwrap();
        if measured.severity != expected || measured.edit_distance != fixture.edit_distance {
            disagreements.push(format!(
                "{}: {} ({}) where the SDK has {} ({})",
                fixture.name,
                measured.severity.as_str(),
                measured.edit_distance,
                fixture.severity,
                fixture.edit_distance
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn the_fixture_set_covers_every_class_and_both_measures() {
    let fixtures = recorded();
    for severity in ["as-is", "minor", "moderate", "major", "discarded"] {
        assert!(
            fixtures.iter().any(|f| f.severity == severity),
            "no {severity} fixture"
        );
    }
    let long = |f: &&Recorded| {
        f.draft.chars().count() + f.final_text.chars().count() >= COMPRESSION_MIN_CHARS
    };
    assert!(fixtures.iter().filter(long).count() >= 10);
    assert!(fixtures.iter().filter(|f| !long(f)).count() >= 10);
}

#[test]
fn scores_are_classed_with_exclusive_bounds() {
    for (score, expected) in [
        (0.0, Severity::AsIs),
        (0.019999, Severity::AsIs),
        (0.02, Severity::Minor),
        (0.099999, Severity::Minor),
        (0.10, Severity::Moderate),
        (0.30, Severity::Major),
        (0.799999, Severity::Major),
        (0.80, Severity::Discarded),
        (1.0, Severity::Discarded),
    ] {
        assert_eq!(Severity::from_score(score), expected, "{score}");
    }
}

#[test]
fn the_cloud_scale_renames_the_ends_only() {
    for (brain, cloud) in [
        (Severity::AsIs, "trivial"),
        (Severity::Minor, "minor"),
        (Severity::Moderate, "moderate"),
        (Severity::Major, "major"),
        (Severity::Discarded, "rewrite"),
    ] {
        assert_eq!(brain.cloud().as_str(), cloud);
        assert_eq!(
            serde_json::to_value(brain.cloud()).unwrap(),
            serde_json::json!(cloud)
        );
        assert_eq!(Severity::from_name(brain.as_str()), Some(brain));
    }
    assert_eq!(Severity::from_name("trivial"), None);
    assert!(Severity::Major.is_major_edit() && Severity::Discarded.is_major_edit());
    assert!(!Severity::Moderate.is_major_edit());
}

#[test]
fn the_ratio_is_ratcliff_obershelp_not_a_longest_common_subsequence() {
    let chars = |s: &str| s.chars().collect::<Vec<_>>();
    for (a, b, ratio) in [
        ("", "", 1.0),
        ("abc", "", 0.0),
        ("abcd", "abcd", 1.0),
        ("abcd", "bcde", 0.75),
        // The longest block "bcd" is taken first; the "a" after it in `b` cannot match the
        // "a" before it in `a`, where an LCS would also keep only 3.
        ("abcd", "bcda", 0.75),
        // An LCS keeps "aaa" (6/9); the longest block "ab" leaves nothing on its left in
        // `a` and nothing on its right in `b`, so no "a" matches: 2 × 2 / 9.
        ("abxaa", "aaab", 4.0 / 9.0),
    ] {
        assert_eq!(matching_ratio(&chars(a), &chars(b)), ratio, "{a:?} {b:?}");
    }
}

#[test]
fn of_equal_blocks_the_first_in_a_then_in_b_is_taken() {
    let a: Vec<char> = "xab-ab".chars().collect();
    let b: Vec<char> = "ab+ab".chars().collect();
    let matcher = BlockMatcher::new(&a, &b);
    let mut budget = usize::MAX;
    assert_eq!(
        matcher.longest_block(0, a.len(), 0, b.len(), &mut budget),
        Some(Block { a: 1, b: 0, len: 2 })
    );
    assert_eq!(
        matcher.longest_block(3, a.len(), 0, b.len(), &mut budget),
        Some(Block { a: 4, b: 0, len: 2 })
    );
    assert_eq!(
        matcher.longest_block(0, 1, 0, b.len(), &mut budget),
        Some(Block { a: 0, b: 0, len: 0 })
    );
    assert_eq!(matcher.longest_block(0, a.len(), 0, b.len(), &mut 3), None);
}

#[test]
fn lengths_are_counted_in_characters_not_bytes() {
    // 160 characters but 480 bytes: still classed by the edit distance.
    let draft = "日本語のテキストはここにあります。".repeat(5);
    let final_text = "日本語の文章はここにあります。".repeat(5);
    let measured = measure(&draft, &final_text);
    assert_eq!(measured.score, measured.edit_distance);
    assert_eq!(measured.edit_distance, 0.1875);
}

#[test]
fn the_compression_distance_takes_over_at_200_characters() {
    let below = measure(&format!("{}a", "x".repeat(99)), &"x".repeat(99));
    assert_eq!(below.score, below.edit_distance);
    let (draft, final_text) = ("x".repeat(100), format!("{}b", "x".repeat(99)));
    let at = measure(&draft, &final_text);
    assert_eq!(at.score, compression_distance(&draft, &final_text));
    assert_ne!(at.score, at.edit_distance);
    assert_eq!(compression_distance("", &"y".repeat(300)), 1.0);
    assert_eq!(measure(&"y".repeat(300), "").severity, Severity::Discarded);
}

#[test]
fn compressed_lengths_are_zlibs_at_level_9() {
    // zlib's own stream for 1,000 "a": 2-byte header, 9 bytes of deflate, 4-byte Adler-32.
    // miniz_oxide's is one byte longer, which would shift every compression distance.
    assert_eq!(compressed_len(&[&[b'a'; 1_000]]), 17);
    assert_eq!(compressed_len(&[b"", b""]), 8);
    assert_eq!(
        compressed_len(&[b"hello ", b"world"]),
        compressed_len(&[b"hello world"])
    );
}

/// `lines` lines of code, the ones `edited` picks calling another function.
fn source_file(lines: usize, edited: impl Fn(usize) -> bool) -> String {
    (0..lines)
        .map(|i| {
            let call = if edited(i) { "evaluate" } else { "compute" };
            format!("    let value_{i} = {call}(input_{});\n", i % 97)
        })
        .collect()
}

#[test]
fn a_large_edit_is_estimated_close_to_the_exact_distance() {
    // 3,000 characters of each side: small enough to compute exactly and to estimate.
    let draft = source_file(80, |_| false);
    let final_text = source_file(80, |i| i % 7 == 0);
    let exact = edit_distance(&draft, &final_text);
    let estimated = 1.0
        - (2 * estimated_matches(&draft, &final_text)) as f64
            / (draft.chars().count() + final_text.chars().count()) as f64;
    assert!(exact > 0.01, "{exact}");
    assert!(
        (exact - estimated).abs() < 0.01,
        "{exact} against {estimated}"
    );
}

#[test]
fn a_large_edit_is_measured_in_bounded_time() {
    // 44,770 characters each side, near the 100,000 the SDK accepts for both.
    let draft = source_file(1_150, |_| false);
    let one_line = source_file(1_150, |i| i == 5);
    let started = std::time::Instant::now();
    let measured = measure(&draft, &one_line);
    // Past zlib's 32 KiB window the compression distance cannot see the shared text, so
    // even this one-line edit is `discarded`: the SDK recorded this class and distance for
    // this very edit.
    assert_eq!(measured.severity, Severity::Discarded, "{measured:?}");
    assert_eq!(measured.edit_distance, 0.000101, "{measured:?}");
    let rewritten = measure(&draft, &"Ünïcödé prose.\n".repeat(3_000));
    assert_eq!(rewritten.severity, Severity::Discarded, "{rewritten:?}");
    assert!(rewritten.edit_distance > 0.8, "{rewritten:?}");
    // Worst cases for the matcher: one repeated line, one line with no break.
    let repeated = measure(&"x\n".repeat(50_000), &"x\n".repeat(49_999));
    assert!(repeated.edit_distance < 0.001, "{repeated:?}");
    let interleaved = measure(&"x\n".repeat(50_000), &"x\ny\n".repeat(25_000));
    assert!(interleaved.edit_distance > 0.3, "{interleaved:?}");
    let unbroken = measure(&"ab".repeat(50_000), &"ba".repeat(50_000));
    assert_eq!(unbroken.edit_distance, 1.0, "{unbroken:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn texts_built_to_defeat_the_matcher_cost_bounded_work() {
    // Each search finds one character: as many searches as characters, each over the rest.
    // Under 200 characters the match is still exact (the SDK's figure).
    assert_eq!(edit_distance(&"a".repeat(99), &"ax".repeat(50)), 0.497487);
    let started = std::time::Instant::now();
    let measured = measure(&"a".repeat(2_000), &"ax".repeat(1_000));
    assert!(measured.edit_distance >= 0.333333, "{measured:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn rounding_is_to_6_decimals() {
    assert_eq!(round6(1.0 - 2.0 / 3.0), 0.333333);
    assert_eq!(round6(0.0000004), 0.0);
    // The binary value of 0.1234565 lies below the half: it rounds down, as in Python.
    assert_eq!(round6(0.1234565), 0.123456);
    assert_eq!(edit_distance("abc", "abd"), 0.333333);
}

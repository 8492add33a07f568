use super::*;

/// One row: draft, final, the archetype and text expected.
fn check(draft: &str, final_text: &str, archetype: Archetype, text: &str) {
    let instruction = extract(draft, final_text);
    assert_eq!(
        (instruction.archetype, instruction.text.as_str()),
        (archetype, text),
        "draft {draft:?} final {final_text:?}"
    );
}

#[test]
fn each_archetype_in_the_order_of_the_spec() {
    check(
        "use tabs",
        "Rule: indent with four spaces in Python files\nmore",
        Archetype::Explicit,
        "Indent with four spaces in Python files",
    );
    check(
        "We might maybe consider possibly shipping the release on Friday.",
        "We ship the release on Friday.",
        Archetype::DropHedges,
        "Avoid hedging words such as 'maybe', 'might', 'possibly'",
    );
    check(
        "Merge the branch.",
        "You should never merge a branch without review.",
        Archetype::Constraint,
        "Never merge a branch without review",
    );
    check(
        "Deploy on Monday.",
        "Deploy on Monday. Run the smoke tests first.",
        Archetype::NewStep,
        "Always run the smoke tests first",
    );
    check(
        "Hey team, the report is done.",
        "Dear team, the report is done.",
        Archetype::Tone,
        "Write in a formal tone",
    );
    check(
        "The meeting is at noon in room four with the whole team and everyone else.",
        "The meeting is at noon.",
        Archetype::Concise,
        "Keep it concise: the draft was about 69% too long",
    );
    check(
        "x = 1",
        "import os\nx = 1",
        Archetype::MoreDetail,
        "Include more detail about import os",
    );
    check(
        "red green blue",
        "blue green red",
        Archetype::Reorder,
        "Present information in a more logical order",
    );
    check(
        "Revenue grew 10% in 2024.",
        "Revenue grew 12% in 2024.",
        Archetype::Facts,
        "Verify facts, numbers, and dates before including them",
    );
    check(
        "apples and pears and plums",
        "- apples\n- pears\n- plums",
        Archetype::ListOrProse,
        "Use a list instead of prose",
    );
    check(
        "We ship the whole release today at noon for all users. The office party was fun.",
        "We ship the whole release today at noon for all users.",
        Archetype::Omit,
        "Don't include office party was fun",
    );
    check(
        "color: red",
        "colour: red",
        Archetype::WordSwap,
        "Use 'colour:' instead of 'color:'",
    );
    check(
        "a b c d e f",
        "a g h i j k",
        Archetype::AddedSentence,
        "Always a g h i j k",
    );
}

#[test]
fn one_register_marker_is_not_a_change_of_tone() {
    check(
        "Hi! The release is ready and the notes are attached for you today.",
        "The release is ready and the notes are attached for you today.",
        Archetype::Omit,
        "Don't include Hi",
    );
    check(
        "Please send the invoice.",
        "Kindly send the invoice. Regards, Finance",
        Archetype::Tone,
        "Write in a formal tone",
    );
}

#[test]
fn a_rule_written_as_a_comment_loses_its_marker() {
    // The rule a user writes in a code comment is the instruction; its comment marker is
    // not (it would be injected into prompts as `- CODE: # Always …`).
    check(
        "p = os.path.join(root, name)\n",
        "# Always prefer pathlib over os.path for file handling.\np = Path(root) / name\n",
        Archetype::Constraint,
        "Always prefer pathlib over os.path for file handling",
    );
    check(
        "let x = 1;",
        "// you should never unwrap here\nlet x = 1;",
        Archetype::Constraint,
        "Never unwrap here",
    );
}

#[test]
fn a_dropped_just_is_a_dropped_hedge() {
    // "just" softens a request as the other hedges do (spec §6.9 lists it among them), and
    // 0.6.0 reads dropping it as dropping a hedge, before any change of tone: a rewrite of
    // a casual note that also loses "just" teaches the hedging lesson, not a tone lesson.
    check(
        "Hey team, just wanted to quickly say thanks btw for the help asap!",
        "Dear team, thank you for your help. Kind regards.",
        Archetype::DropHedges,
        "Avoid hedging words such as 'just'",
    );
    check(
        "It is just right.",
        "It is right.",
        Archetype::DropHedges,
        "Avoid hedging words such as 'just'",
    );
}

#[test]
fn hedges_and_constraints_are_chosen_in_sorted_order() {
    // 0.6.0 names the hedges and picks the constraint word in hash order (§13 #15): here
    // the choice is the sorted one, whatever order the words appear in.
    check(
        "Possibly, perhaps, maybe, it could work.",
        "It works.",
        Archetype::DropHedges,
        "Avoid hedging words such as 'could', 'maybe', 'perhaps'",
    );
    check(
        "Write tests.",
        "Never skip tests. Always write tests.",
        Archetype::Constraint,
        "Always write tests",
    );
}

#[test]
fn instructions_are_one_line_and_capped() {
    // §13 #7: a multi-line code diff once became a multi-line description.
    let long_line = "word ".repeat(100);
    let instruction = extract("a", &format!("Rule: keep\n{long_line}"));
    assert_eq!(instruction.text, "Keep", "only the rule's own line");
    let added = extract(
        "x = 1",
        &format!("from pathlib import Path\n\n{long_line}\nx = 1"),
    );
    assert!(!added.text.contains('\n'), "{:?}", added.text);
    assert!(added.text.chars().count() <= MAX_INSTRUCTION_CHARS);
    let capped = one_line(&format!("Always {long_line}"), MAX_INSTRUCTION_CHARS);
    assert!(capped.chars().count() <= MAX_INSTRUCTION_CHARS, "{capped}");
    assert!(
        capped.ends_with("word"),
        "cut at a word boundary: {capped:?}"
    );
}

#[test]
fn one_line_collapses_every_python_line_break() {
    assert_eq!(one_line("a\r\nb\u{2028}c\x1cd\t e  ", 200), "a b c d e");
    assert_eq!(one_line(" \n ", 200), FALLBACK_INSTRUCTION);
    assert_eq!(one_line("abcdefghij", 4), "abcd");
}

#[test]
fn prefixes_are_matched_on_the_original_text() {
    // The Kelvin sign lower-cases to a one-byte `k`: "MA\u{212A}E SURE TO" is not the
    // lead-in, and cutting the lead-in's length off it would split the text wrongly.
    check(
        "Merge it.",
        "MA\u{212A}E SURE TO always merge.",
        Archetype::Constraint,
        "MA\u{212A}E SURE TO always merge",
    );
    check(
        "x",
        "FIX: please Please run the linter",
        Archetype::Explicit,
        "Please Please run the linter",
    );
    check(
        "Merge it.",
        "PLEASE make sure to always merge after review.",
        Archetype::Constraint,
        "Always merge after review",
    );
}

#[test]
fn every_instruction_is_one_non_empty_line_within_the_cap() {
    // Pieces that stress the rules, combined in every pair: line breaks of every kind,
    // non-ASCII text, very long words and lines, markers, empty texts.
    let pieces = [
        "",
        " ",
        "a",
        "Rule:",
        "Rule: \n\n",
        "- item\n- item two\r\n* three",
        "I think it might possibly work.\u{2028}Maybe.",
        "Always  \t check\x0bthe\x1coutput.",
        "Zürich ist schön. Ünïcödé wörds everywhere!",
        "$1,000 on 2026-01-02 at https://example.org/x 50%",
        "\"\"\"docstring\"\"\"\ndef f(x: int) -> int:\n    return x",
        &"verylongword".repeat(40),
        &"Sentence number one is here. ".repeat(30),
    ];
    for draft in pieces {
        for final_text in pieces {
            if draft == final_text {
                continue;
            }
            let instruction = extract(draft, final_text);
            let text = &instruction.text;
            assert!(!text.is_empty(), "{draft:?} -> {final_text:?}");
            assert_eq!(
                pytext::splitlines(text),
                [text.as_str()],
                "{draft:?} -> {final_text:?}: one line"
            );
            assert!(
                text.chars()
                    .filter(|c| pytext::is_whitespace(*c))
                    .all(|c| c == ' ')
                    && !text.contains("  "),
                "whitespace collapsed: {text:?}"
            );
            assert!(text.chars().count() <= MAX_INSTRUCTION_CHARS, "{text:?}");
            assert_eq!(text.trim(), text, "trimmed");
        }
    }
}

#[test]
fn the_same_pair_gives_the_same_instruction() {
    let first = extract("I think it might rain.", "It rains.");
    for _ in 0..5 {
        assert_eq!(extract("I think it might rain.", "It rains."), first);
    }
}

#[test]
fn stop_words_come_from_the_crate_list() {
    assert!(is_stop_word("the"));
    assert!(is_stop_word("about"));
    assert!(!is_stop_word("release"));
}

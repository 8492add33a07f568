use super::*;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> PlatformEnv {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    PlatformEnv::from_lookup(|name| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

fn object(text: &str) -> Object {
    match pyjson::from_str(text).unwrap() {
        Value::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

#[test]
fn platform_source_follows_the_environment_in_order() {
    for (pairs, expected) in [
        (vec![], "raw-python"),
        (
            vec![("GRADATA_PLATFORM_SOURCE", "mine"), ("CLAUDECODE", "1")],
            "mine",
        ),
        (
            vec![("GRADATA_PLATFORM_SOURCE", ""), ("CLAUDECODE", "1")],
            "claude-code",
        ),
        (vec![("CLAUDE_CODE", "1"), ("CURSOR", "1")], "claude-code"),
        (
            vec![("OPENAI_API_KEY", "k"), ("CURSOR_TRACE_ID", "t")],
            "cursor",
        ),
        (
            vec![("WINDSURF_SESSION_ID", "w"), ("GRADATA_MCP_SERVER", "1")],
            "windsurf",
        ),
        (
            vec![("GRADATA_MCP_SERVER", "1"), ("ANTHROPIC_API_KEY", "k")],
            "mcp-server",
        ),
        (
            vec![("ANTHROPIC_API_KEY", "k"), ("OPENAI_API_KEY", "k")],
            "anthropic-sdk",
        ),
        (vec![("OPENAI_API_KEY", "k")], "openai-sdk"),
        (vec![("CLAUDECODE", "")], "raw-python"),
    ] {
        assert_eq!(env(&pairs).platform_source(), expected, "{pairs:?}");
    }
}

#[test]
fn timestamps_are_python_isoformat() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_775_124_000);
    for (offset, expected) in [
        (Duration::ZERO, "2026-04-02T10:00:00+00:00"),
        (Duration::from_micros(5), "2026-04-02T10:00:00.000005+00:00"),
        (
            Duration::from_nanos(123_456_789),
            "2026-04-02T10:00:00.123456+00:00",
        ),
        // Below a microsecond Python has nothing: the fraction is omitted.
        (Duration::from_nanos(999), "2026-04-02T10:00:00+00:00"),
    ] {
        assert_eq!(python_utc_isoformat(at + offset), expected);
    }
}

#[test]
fn tags_are_enriched_by_event_type() {
    for (event_type, data, tags, expected) in [
        (
            "CORRECTION",
            r#"{"category": "TONE"}"#,
            vec![],
            vec!["category:TONE", "cognitive_load:extraneous"],
        ),
        (
            "CORRECTION",
            r#"{"category": "accuracy"}"#,
            vec!["x"],
            vec!["x", "category:accuracy", "cognitive_load:germane"],
        ),
        (
            "CORRECTION",
            r#"{"category": "CODE"}"#,
            vec!["category:OTHER"],
            vec!["category:OTHER"],
        ),
        ("CORRECTION", r#"{"category": ""}"#, vec![], vec![]),
        (
            "CORRECTION",
            r#"{"category": 5}"#,
            vec![],
            vec!["category:5"],
        ),
        (
            "CORRECTION",
            r#"{"category": "FACTUAL"}"#,
            vec!["cognitive_load:x"],
            vec!["cognitive_load:x", "category:FACTUAL"],
        ),
        (
            "OUTPUT",
            r#"{"output_type": "email_draft"}"#,
            vec![],
            vec!["output:email"],
        ),
        (
            "OUTPUT",
            r#"{"output_type": "report"}"#,
            vec!["output:x"],
            vec!["output:x"],
        ),
        (
            "OUTPUT",
            r#"{"output_type": "report"}"#,
            vec![],
            vec!["output:report"],
        ),
        (
            "DELTA_TAG",
            r#"{"prospect": "Ada", "activity_type": "call"}"#,
            vec![],
            vec!["prospect:Ada", "channel:phone"],
        ),
        (
            "DELTA_TAG",
            r#"{"activity_type": "fax"}"#,
            vec!["channel:x"],
            vec!["channel:x"],
        ),
        ("LOG", r#"{"category": "TONE"}"#, vec![], vec![]),
    ] {
        let tags: Vec<String> = tags.into_iter().map(str::to_owned).collect();
        assert_eq!(
            enrich_tags(event_type, &object(data), tags),
            expected,
            "{event_type} {data}"
        );
    }
}

#[test]
fn jsonl_and_row_have_python_bytes() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_775_124_000_250_000);
    let event = BrainEvent::new(
        at,
        0,
        "CORRECTION",
        "plugin.hook",
        object(r#"{"zeta": "café ✓", "category": "TONE", "n": 1.0}"#),
        vec!["signal:é".to_owned()],
        &env(&[("CLAUDECODE", "1")]),
    );
    // Python 3.11: json.dumps(event, ensure_ascii=False) of the same dict.
    assert_eq!(
        event.jsonl_line(),
        "{\"ts\": \"2026-04-02T10:00:00.250000+00:00\", \"session\": 0, \"type\": \
             \"CORRECTION\", \"source\": \"plugin.hook\", \"data\": {\"zeta\": \"café ✓\", \
             \"category\": \"TONE\", \"n\": 1.0, \"platform_source\": \"claude-code\"}, \
             \"tags\": [\"signal:é\", \"category:TONE\", \"cognitive_load:extraneous\"], \
             \"valid_from\": \"2026-04-02T10:00:00.250000+00:00\", \"valid_until\": null}\n"
    );
    let row = event.row();
    assert_eq!(
        row.data_json,
        "{\"zeta\": \"caf\\u00e9 \\u2713\", \"category\": \"TONE\", \"n\": 1.0, \
             \"platform_source\": \"claude-code\"}"
    );
    assert_eq!(
        row.tags_json,
        "[\"signal:\\u00e9\", \"category:TONE\", \"cognitive_load:extraneous\"]"
    );
    assert_eq!(row.valid_from, row.ts);
    assert_eq!(row.valid_until, None);
}

#[test]
fn a_given_platform_source_is_kept() {
    let event = BrainEvent::new(
        SystemTime::UNIX_EPOCH,
        3,
        "X",
        "s",
        object(r#"{"platform_source": "mine"}"#),
        vec![],
        &env(&[("CLAUDECODE", "1")]),
    );
    assert_eq!(
        event.data.get("platform_source"),
        Some(&Value::from("mine"))
    );
    assert_eq!(event.data.len(), 1);
}

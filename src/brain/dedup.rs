//! Observation dedup (brain spec §6.9, `Brain.correct` step 7): the same correction seen again
//! within a few sessions is one observation, not new evidence, so it creates and reinforces
//! nothing. Without it, a client that reports one edit twice, or a user who makes the same edit
//! in every turn, would inflate a lesson's fire count and confidence.
//!
//! A correction's fingerprint is the SHA-1 of its category and its normalised texts, as the
//! Python SDK computes it, so that the SDK and gradata recognise each other's sightings in the
//! shared `observation_dedup` table of `system.db`. [`fingerprint`] and [`is_recent`] are pure;
//! [`sight`] records a sighting in the table (created when missing, as the SDK creates it) and
//! says whether it was a duplicate. It knows nothing of lessons or HTTP.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use sha1::{Digest, Sha1};

/// A sighting within this many sessions of the last one (the current session included) is a
/// duplicate: the last one's session is at least `current - (WINDOW_SESSIONS - 1)`.
pub const WINDOW_SESSIONS: i64 = 10;

/// The characters of each text the fingerprint reads.
pub const FINGERPRINT_CHARS: usize = 500;

/// The table, as the SDK creates it.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS observation_dedup (
    fingerprint    TEXT PRIMARY KEY,
    category       TEXT NOT NULL,
    first_session  INTEGER NOT NULL,
    last_session   INTEGER NOT NULL,
    seen_count     INTEGER NOT NULL DEFAULT 1,
    first_seen_ts  TEXT NOT NULL,
    last_seen_ts   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_observation_dedup_last_session
    ON observation_dedup(last_session);";

/// The fingerprint of a correction of `category` from `old` to `new` (both as stored, that is
/// redacted): the hex SHA-1 of `CATEGORY|<normalised "old[..500]||new[..500]">`.
pub fn fingerprint(category: &str, old: &str, new: &str) -> String {
    let cut = |text: &str| text.chars().take(FINGERPRINT_CHARS).collect::<String>();
    let text = format!("{}||{}", cut(old), cut(new));
    let payload = format!("{}|{}", normalise_category(category), normalise(&text));
    let digest = Sha1::digest(payload.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether a fingerprint last seen in `last_session` is a duplicate in `current`: within the
/// window, or seen at all when the correction has no session.
pub fn is_recent(last_session: i64, current: Option<i64>) -> bool {
    match current {
        None => true,
        Some(current) => last_session > current - WINDOW_SESSIONS,
    }
}

/// What [`sight`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// Seen before, within the window: the correction teaches nothing new.
    pub duplicate: bool,
    /// How many times it has been seen, this time included.
    pub seen_count: i64,
}

/// Records a sighting of `fingerprint` (of `category`) in `session` (0 when none) at `now`,
/// in one transaction: whether it was a duplicate before this sighting, and the new count.
pub fn sight(
    connection: &mut Connection,
    fingerprint: &str,
    category: &str,
    session: Option<i64>,
    now: &str,
) -> rusqlite::Result<Sighting> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute_batch(CREATE_TABLE)?;
    let last: Option<(i64, i64)> = transaction
        .query_row(
            "SELECT seen_count, last_session FROM observation_dedup WHERE fingerprint = ?1",
            [fingerprint],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let stored_session = session.unwrap_or(0);
    let sighting = match last {
        None => {
            transaction.execute(
                "INSERT INTO observation_dedup (fingerprint, category, first_session, \
                 last_session, seen_count, first_seen_ts, last_seen_ts) \
                 VALUES (?1, ?2, ?3, ?3, 1, ?4, ?4)",
                (
                    fingerprint,
                    normalise_category(category),
                    stored_session,
                    now,
                ),
            )?;
            Sighting {
                duplicate: false,
                seen_count: 1,
            }
        }
        Some((count, last_session)) => {
            let seen_count = count + 1;
            transaction.execute(
                "UPDATE observation_dedup SET seen_count = ?1, last_session = ?2, \
                 last_seen_ts = ?3 WHERE fingerprint = ?4",
                (seen_count, stored_session, now, fingerprint),
            )?;
            Sighting {
                duplicate: is_recent(last_session, session),
                seen_count,
            }
        }
    };
    transaction.commit()?;
    Ok(sighting)
}

/// Upper case, trimmed; `UNKNOWN` when empty.
fn normalise_category(category: &str) -> String {
    let upper = category.trim().to_uppercase();
    if upper.is_empty() {
        "UNKNOWN".to_owned()
    } else {
        upper
    }
}

/// Lower case, trimmed, each run of whitespace one space, trailing `.,;:!?` dropped.
fn normalise(text: &str) -> String {
    let collapsed = text
        .trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    collapsed
        .trim_end_matches(['.', ',', ';', ':', '!', '?'])
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_the_sdks() {
        // Computed with the Python SDK 0.6.0's own function on the same inputs.
        assert_eq!(
            fingerprint("content", "Hi  team.", "Hello TEAM!!"),
            SDK_FINGERPRINT
        );
    }

    /// `observation_fingerprint("Hi  team.||Hello TEAM!!", category="content")` in 0.6.0.
    const SDK_FINGERPRINT: &str = "d97e03e1c11cda967f9b59918deca02e3c6d46d8";

    #[test]
    fn case_whitespace_and_trailing_punctuation_do_not_make_a_new_observation() {
        let one = fingerprint("CODE", "use os.path", "use pathlib.");
        assert_eq!(one, fingerprint("code", "  USE   os.path", "use pathlib?!"));
        assert_ne!(one, fingerprint("CONTENT", "use os.path", "use pathlib."));
        assert_ne!(one, fingerprint("CODE", "use os.path", "use pathlib now"));
        assert_eq!(one.len(), 40);
    }

    #[test]
    fn only_the_first_500_characters_of_each_text_count() {
        let long = "a".repeat(FINGERPRINT_CHARS);
        assert_eq!(
            fingerprint("CODE", &format!("{long}x"), "b"),
            fingerprint("CODE", &format!("{long}y"), "b")
        );
    }

    #[test]
    fn the_window_is_ten_sessions_and_open_without_a_session() {
        assert!(is_recent(5, Some(5)));
        assert!(is_recent(5, Some(14)));
        assert!(!is_recent(5, Some(15)));
        assert!(is_recent(0, None));
        assert!(is_recent(100, None));
    }

    #[test]
    fn a_second_sighting_in_the_window_is_a_duplicate_and_every_sighting_counts() {
        let mut connection = Connection::open_in_memory().unwrap();
        let fp = fingerprint("CODE", "a", "b");
        let first = sight(&mut connection, &fp, "code", Some(3), "t1").unwrap();
        assert_eq!(
            first,
            Sighting {
                duplicate: false,
                seen_count: 1
            }
        );
        let again = sight(&mut connection, &fp, "code", Some(4), "t2").unwrap();
        assert_eq!(
            again,
            Sighting {
                duplicate: true,
                seen_count: 2
            }
        );
        let later = sight(&mut connection, &fp, "code", Some(14), "t3").unwrap();
        assert_eq!(
            later,
            Sighting {
                duplicate: false,
                seen_count: 3
            }
        );
        let row: (String, i64, i64, String, String) = connection
            .query_row(
                "SELECT category, first_session, last_session, first_seen_ts, last_seen_ts \
                 FROM observation_dedup",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(row, ("CODE".into(), 3, 14, "t1".into(), "t3".into()));
    }
}

//! The one rule id format: `CATEGORY:` and the first 8 hex digits of the SHA-256 of
//! `CATEGORY:description` (UTF-8). It is the form 0.6.0's `/apply-rules` uses; 0.6.0's
//! `/enforce-rules` hashed the description alone, so the same rule had two ids (brain spec §5.2
//! and §13 #8). Every route uses this one here, so an id from `/apply-rules` matches an id from
//! `/enforce-rules` and `/correct`.
//!
//! Pure; knows nothing of lessons beyond the two strings.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// The id of the rule with this (upper-cased) category and description.
pub fn rule_id(category: &str, description: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(category.as_bytes());
    hasher.update(b":");
    hasher.update(description.as_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(category.len() + 9);
    id.push_str(category);
    id.push(':');
    for byte in &digest[..4] {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_those_of_apply_rules() {
        // Ids answered by 0.6.0's /apply-rules for these lessons.
        let cases = [
            (
                "CODE",
                "Always add type hints to public Python functions",
                "CODE:d5aaa5cd",
            ),
            (
                "TONE",
                "Never open client emails with small talk",
                "TONE:5caea4bf",
            ),
            ("CODE/X", "lower case category and state", "CODE/X:e19ac5e3"),
            ("CAT2", "spaced   out", "CAT2:864a0837"),
            ("STRASSE", "x", "STRASSE:2067d47a"),
            ("B", "sep", "B:b37833e6"),
        ];
        for (category, description, id) in cases {
            assert_eq!(
                rule_id(category, description),
                id,
                "{category}: {description}"
            );
        }
    }
}

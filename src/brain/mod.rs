//! The brain: the directory the Python SDK and the plugin share (`lessons.md`, `system.db`,
//! `events.jsonl`, the salt and lock files), and what the brain routes decide from it. No HTTP
//! here: the API turns requests into calls on this module and its answers into responses.

pub mod adversarial;
pub mod archive;
pub mod atomic;
pub mod attribution;
pub mod category;
pub mod confidence;
pub mod correct;
pub mod dedup;
pub mod end_session;
pub mod enforce;
pub mod events;
pub mod feedback;
pub mod graduation;
pub mod group_commit;
mod handle;
pub mod index;
pub mod instruction;
pub mod learn;
pub mod lessons;
pub mod lessons_file;
pub mod lessons_write;
pub mod maintain;
pub mod manifest;
pub mod mode;
pub mod pyjson;
pub mod pyrepr;
pub mod pytext;
pub mod recall;
pub mod recall_index;
pub mod recall_live;
pub mod redact;
pub mod repair;
pub mod rule_id;
pub mod rules;
pub mod sessions;
pub mod severity;
pub mod tag_delta;
#[cfg(test)]
mod test_support;

pub use handle::{Brain, Error, Served};

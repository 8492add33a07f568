//! The brain: the directory the Python SDK and the plugin share (`lessons.md`, `system.db`,
//! `events.jsonl`, the salt and lock files), and what the brain routes decide from it. No HTTP
//! here: the API turns requests into calls on this module and its answers into responses.

pub mod events;
pub mod lessons_file;
pub mod pyjson;
pub mod pytext;
pub mod sessions;

//! The outbox through its public API: group commit, idempotent enqueue, leases, settle, retention.

use crate::support;

//! The CLI, run as a binary: drain, status, queue, exit codes.

use crate::support;

//! Drain benchmark (written with the integration harness).
fn main() {}

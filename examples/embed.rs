//! Embedding ccm-core in another service (filled in by the runtime work).
fn main() {}

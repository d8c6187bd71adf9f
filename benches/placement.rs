//! Placement benchmark (filled in with the placement engine).
fn main() {}

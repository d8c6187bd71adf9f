//! One module per subcommand.

pub mod demo;
pub mod plan;
pub mod serve;
pub mod templates;
pub mod validate;

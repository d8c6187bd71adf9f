//! One module per subcommand.

pub mod client;
pub mod definitions;
pub mod demo;
pub mod plan;
pub mod serve;
pub mod sessions;
pub mod templates;
pub mod validate;
pub mod workers;

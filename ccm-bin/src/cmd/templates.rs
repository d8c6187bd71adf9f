//! `ccm templates ...`.

/// Template subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seed templates from the templates file into the spec store (create if absent).
    Seed {},
}

/// Runs a template subcommand.
pub fn run(_c: Command) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ccm templates seed is not available in this build yet")
}

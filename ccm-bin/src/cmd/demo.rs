//! `ccm demo`.

/// Arguments of `ccm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ccm demo`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ccm demo is not available in this build yet")
}

//! `ccm plan`.

/// Arguments of `ccm plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ccm plan`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ccm plan is not available in this build yet")
}

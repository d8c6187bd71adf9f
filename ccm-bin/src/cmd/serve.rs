//! `ccm serve`.

/// Arguments of `ccm serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ccm serve`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ccm serve is not available in this build yet")
}

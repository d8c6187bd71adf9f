//! `ccm validate`.

/// Arguments of `ccm validate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ccm validate`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ccm validate is not available in this build yet")
}

//! `ccm`: the reference daemon and CLI of the ccm Lablet Resource Manager.

mod api;
mod cmd;
mod http;
mod metrics;
mod settings;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// ccm — places CML lab sessions on bare-metal workers and plans how many workers to run.
#[derive(Debug, Parser)]
#[command(name = "ccm", version, about, long_about = None, args_override_self = true)]
struct Cli {
    /// `.env` file read under the environment (the environment wins; a missing file is fine).
    #[arg(long, global = true, default_value = ".env", value_name = "PATH")]
    env_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the exam-day demo: the real loops on a virtual clock, all in-process (no servers needed).
    Demo(cmd::demo::Args),
    /// Plan capacity for a scenario file and compare with the original policy.
    Plan(cmd::plan::Args),
    /// Run the daemon (scheduler + controller loops, HTTP health and metrics).
    Serve(cmd::serve::Args),
    /// Check that etcd, S3/MinIO and MongoDB are reachable.
    ValidatePrereqs(cmd::validate::Args),
    /// Worker template commands.
    #[command(subcommand)]
    Templates(cmd::templates::Command),
    /// Lablet definitions of a running daemon (CCM_URL, CCM_API_TOKEN).
    #[command(subcommand)]
    Definitions(cmd::definitions::Command),
    /// Sessions of a running daemon: book, list, show, cancel, explain.
    #[command(subcommand)]
    Sessions(cmd::sessions::Command),
    /// Workers of a running daemon.
    #[command(subcommand)]
    Workers(cmd::workers::Command),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `default`).
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; the daemon logs what its loops do.
    init_tracing(match cli.command {
        Command::Demo(_)
        | Command::Plan(_)
        | Command::Definitions(_)
        | Command::Sessions(_)
        | Command::Workers(_) => "warn",
        _ => "warn,ccm=info,ccm_core=info,ccm_adapters=info",
    });
    let env_file = cli.env_file;
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Serve(a) => cmd::serve::run(a, &env_file),
        Command::ValidatePrereqs(a) => cmd::validate::run(a, &env_file),
        Command::Templates(c) => cmd::templates::run(c, &env_file),
        Command::Definitions(c) => cmd::definitions::run(c),
        Command::Sessions(c) => cmd::sessions::run(c),
        Command::Workers(c) => cmd::workers::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

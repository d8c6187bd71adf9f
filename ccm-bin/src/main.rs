//! `ccm`: the reference daemon and CLI of the ccm Lablet Resource Manager.

mod cmd;

use clap::{Parser, Subcommand};

/// ccm — places CML lab sessions on bare-metal workers and plans how many workers to run.
#[derive(Debug, Parser)]
#[command(name = "ccm", version, about, long_about = None)]
struct Cli {
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::ValidatePrereqs(a) => cmd::validate::run(a),
        Command::Templates(c) => cmd::templates::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

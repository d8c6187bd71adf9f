//! `ccm templates seed`: loads `WORKER_TEMPLATES_CONFIG_PATH` and seeds the spec store
//! (MongoDB when `MONGODB_URI` is set, else the in-memory store): create if absent, never
//! overwrite.

use crate::settings::Settings;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Template subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seed templates from the templates file into the spec store (create if absent).
    Seed {
        /// Templates file (default: WORKER_TEMPLATES_CONFIG_PATH).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// Runs a template subcommand.
pub fn run(c: Command, env_file: &Path) -> anyhow::Result<ExitCode> {
    let Command::Seed { file } = c;
    let settings = Settings::load(Some(env_file))?;
    let path = file.unwrap_or_else(|| settings.worker_templates_path.clone());
    let templates = ccm_core::template::load_templates_file(&path)
        .map_err(|e| anyhow::anyhow!("worker templates: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let (spec, name) = super::serve::spec_backend(&settings, false).await?;
        let report = spec
            .seed_templates(&templates)
            .await
            .map_err(|e| anyhow::anyhow!("seeding {name}: {e}"))?;
        anyhow::Ok((name, report))
    });
    rt.shutdown_background();
    let (name, report) = result?;
    println!(
        "Seeding {} template(s) from {} into the {name} spec store:",
        templates.len(),
        path.display()
    );
    for t in &report.created {
        println!("  created {t}");
    }
    for t in &report.kept {
        println!("  kept    {t} (already present, not overwritten)");
    }
    println!(
        "{} created, {} kept",
        report.created.len(),
        report.kept.len()
    );
    Ok(ExitCode::SUCCESS)
}

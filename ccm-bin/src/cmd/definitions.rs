//! `ccm definitions register|list|show`: the definitions of a running daemon.

use super::client::{cell, print_json, segment, table, Client};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Definition subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a definition from a CML lab YAML file (ports from its node tags).
    Register {
        /// The lab YAML file.
        lab_yaml: PathBuf,
        /// Definition name (a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// Semver version (default: 1.0.0, or the next patch when the content changed).
        #[arg(long)]
        version: Option<String>,
        /// CPU cores per session.
        #[arg(long)]
        cpu: u32,
        /// Memory per session, GB.
        #[arg(long)]
        memory_gb: u32,
        /// Storage per session, GB.
        #[arg(long)]
        storage_gb: u32,
        /// CML nodes (default: the nodes in the lab YAML).
        #[arg(long)]
        nodes: Option<u32>,
        /// Longest session, minutes (default 120).
        #[arg(long)]
        max_minutes: Option<u32>,
        /// Licences it may run under (PERSONAL, ENTERPRISE; repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        license: Vec<String>,
        /// Who registers it.
        #[arg(long)]
        created_by: Option<String>,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// The latest version of every definition.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One definition (id `name@version`, or a name for its latest version).
    Show {
        /// Id or name.
        id: String,
        /// List every version of the name.
        #[arg(long)]
        versions: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Largest lab YAML file read.
const MAX_FILE: u64 = 1024 * 1024;

fn rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|d| {
            let r = &d["resource_requirements"];
            vec![
                cell(&d["id"]),
                cell(&d["version"]),
                format!(
                    "{}c/{}G/{}G",
                    cell(&r["cpu_cores"]),
                    cell(&r["memory_gb"]),
                    cell(&r["storage_gb"])
                ),
                cell(&d["node_count"]),
                d["port_template"]
                    .as_array()
                    .map_or(0, Vec::len)
                    .to_string(),
                cell(&d["max_duration_minutes"]),
            ]
        })
        .collect()
}

const HEADERS: [&str; 6] = ["ID", "VERSION", "NEEDS", "NODES", "PORTS", "MAX_MIN"];

/// Runs a definitions subcommand.
pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    let client = Client::from_env()?;
    match c {
        Command::Register {
            lab_yaml,
            name,
            version,
            cpu,
            memory_gb,
            storage_gb,
            nodes,
            max_minutes,
            license,
            created_by,
            json,
        } => {
            let meta = std::fs::metadata(&lab_yaml)
                .map_err(|e| anyhow::anyhow!("{}: {e}", lab_yaml.display()))?;
            if meta.len() > MAX_FILE {
                anyhow::bail!(
                    "{}: {} bytes, more than the limit of {MAX_FILE}",
                    lab_yaml.display(),
                    meta.len()
                );
            }
            let text = std::fs::read_to_string(&lab_yaml)
                .map_err(|e| anyhow::anyhow!("{}: {e}", lab_yaml.display()))?;
            let body = json!({
                "name": name,
                "version": version,
                "resource_requirements": { "cpu_cores": cpu, "memory_gb": memory_gb, "storage_gb": storage_gb },
                "node_count": nodes,
                "max_duration_minutes": max_minutes,
                "license_affinity": license.iter().map(|l| l.to_ascii_uppercase()).collect::<Vec<_>>(),
                "created_by": created_by,
                "lab_yaml": text,
            });
            let v = client.post("/api/v1/definitions", &body)?;
            if json {
                print_json(&v)?;
            } else {
                let d = &v["definition"];
                println!(
                    "{} {} ({} ports: {})",
                    cell(&v["outcome"]),
                    cell(&d["id"]),
                    d["port_template"].as_array().map_or(0, Vec::len),
                    d["port_template"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .map(|p| cell(&p["name"]))
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
                println!(
                    "lab YAML sha256 {} at {}",
                    cell(&d["lab_yaml_hash"]),
                    cell(&d["lab_artifact_uri"])
                );
            }
        }
        Command::List { json } => {
            let v = client.get("/api/v1/definitions", &[])?;
            if json {
                print_json(&v)?;
            } else {
                table(
                    &HEADERS,
                    &rows(v["items"].as_array().map_or(&[][..], |a| a)),
                );
            }
        }
        Command::Show { id, versions, json } => {
            let v = if versions {
                client.get(
                    &format!("/api/v1/definitions/{}/versions", segment(&id)),
                    &[],
                )?
            } else {
                client.get(&format!("/api/v1/definitions/{}", segment(&id)), &[])?
            };
            if json {
                print_json(&v)?;
            } else if versions {
                table(
                    &HEADERS,
                    &rows(v["items"].as_array().map_or(&[][..], |a| a)),
                );
            } else {
                table(&HEADERS, &rows(std::slice::from_ref(&v)));
                let ports: Vec<String> = v["port_template"]
                    .as_array()
                    .map(|a| a.iter().map(|p| cell(&p["name"])).collect())
                    .unwrap_or_default();
                println!(
                    "ports: {}",
                    if ports.is_empty() {
                        "-".into()
                    } else {
                        ports.join(", ")
                    }
                );
                println!(
                    "lab YAML sha256 {} at {}",
                    cell(&v["lab_yaml_hash"]),
                    cell(&v["lab_artifact_uri"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `ccm workers list`: the fleet of a running daemon with capacity, allocation and ports.

use super::client::{cell, print_json, Client};
use std::process::ExitCode;

/// Worker subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every worker.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a workers subcommand.
pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    let client = Client::from_env()?;
    let Command::List { json } = c;
    let v = client.get("/api/v1/workers", &[])?;
    if json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dims = |l: &serde_json::Value| {
        format!(
            "{}c/{}G/{}n",
            cell(&l["cpu_cores"]),
            cell(&l["memory_gb"]),
            cell(&l["nodes"])
        )
    };
    let rows: Vec<Vec<String>> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    vec![
                        cell(&w["id"]),
                        cell(&w["state"]),
                        cell(&w["template"]),
                        cell(&w["region"]),
                        dims(&w["allocated"]),
                        dims(&w["capacity"]),
                        format!("{}/{}", cell(&w["ports"]["allocated"]), {
                            let a = w["ports"]["allocated"].as_u64().unwrap_or(0);
                            let f = w["ports"]["free"].as_u64().unwrap_or(0);
                            a + f
                        }),
                        w["sessions"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    super::client::table(
        &[
            "ID",
            "STATE",
            "TEMPLATE",
            "REGION",
            "ALLOCATED",
            "CAPACITY",
            "PORTS",
            "SESSIONS",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `ccm plan --live`: the plan a running daemon's controller would make now. Exit 2 when the
/// plan cannot serve some session (as `ccm plan` does for a scenario).
pub fn live_plan(json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::from_env()?;
    let v = client.get("/api/v1/plan/preview", &[])?;
    let plan = &v["plan"];
    let unserved = plan["unserved"].as_array().map_or(0, Vec::len);
    if json {
        print_json(&v)?;
    } else {
        let cost = &plan["cost"];
        println!(
            "plan at {}: {} session(s) placed, {} unserved, {} worker(s), cost ${:.2} (lower bound ${:.2})",
            cell(&plan["now"]),
            plan["assignments"].as_array().map_or(0, Vec::len),
            unserved,
            cell(&cost["workers"]),
            cost["cost_usd"].as_f64().unwrap_or(0.0),
            cost["lower_bound_usd"].as_f64().unwrap_or(0.0),
        );
        let actions: Vec<Vec<String>> = plan["actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        vec![
                            cell(
                                x.get("launch_at")
                                    .or_else(|| x.get("at"))
                                    .unwrap_or(&serde_json::Value::Null),
                            ),
                            cell(&x["action"]),
                            cell(&x["worker_id"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !actions.is_empty() {
            super::client::table(&["AT", "ACTION", "WORKER"], &actions);
        }
        for d in v["due"].as_array().into_iter().flatten() {
            println!(
                "due now: {} {} ({})",
                cell(&d["action"]),
                cell(&d["worker_id"]),
                cell(&d["reason"])
            );
        }
        for u in plan["unserved"].as_array().into_iter().flatten() {
            println!(
                "unserved: {} — {}",
                cell(&u["session_id"]),
                cell(&u["reason"])
            );
        }
    }
    Ok(if unserved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

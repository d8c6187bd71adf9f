//! `ccm sessions book|list|show|cancel|connect|explain|lab-yaml`: sessions of a running daemon.

use super::client::{
    admission_line, cell, print_json, refusal_line, segment, table, Client, ServerError,
};
use serde_json::{json, Value};
use std::process::ExitCode;

/// Session subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Book a session; the planner admits or rejects it. Exit 2 when not admitted.
    Book {
        /// Definition id (`name@version`) or name (its latest version).
        definition: String,
        /// Owner.
        #[arg(long)]
        owner: String,
        /// Slot start (RFC 3339); without --start and --end: as soon as possible.
        #[arg(long)]
        start: Option<String>,
        /// Slot end (RFC 3339).
        #[arg(long, conflicts_with = "minutes")]
        end: Option<String>,
        /// Slot length in minutes from --start (instead of --end).
        #[arg(long)]
        minutes: Option<u32>,
        /// Region.
        #[arg(long)]
        region: Option<String>,
        /// External reservation id.
        #[arg(long)]
        reservation: Option<String>,
        /// Idempotency key: the same key returns the same session.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Ask without booking.
        #[arg(long)]
        dry_run: bool,
        /// Store it even when the plan cannot serve it.
        #[arg(long)]
        queue: bool,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Sessions, filtered.
    List {
        /// States, comma-separated (PENDING,SCHEDULED,…).
        #[arg(long)]
        state: Option<String>,
        /// Owner.
        #[arg(long)]
        owner: Option<String>,
        /// Bound worker.
        #[arg(long)]
        worker: Option<String>,
        /// Definition id or name.
        #[arg(long)]
        definition: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<usize>,
        /// Page after this session id.
        #[arg(long)]
        after: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One session.
    Show {
        /// Session id.
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a session (capacity and ports are released).
    Cancel {
        /// Session id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The user connected: a READY session is RUNNING from now.
    Connect {
        /// Session id.
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Why a session is still PENDING.
    Explain {
        /// Session id.
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The session's lab YAML with its ports (once bound).
    LabYaml {
        /// Session id.
        id: String,
    },
}

fn parse_time(flag: &str, v: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            anyhow::anyhow!(
                "--{flag}: expected an RFC 3339 time such as 2026-05-04T08:00:00Z, got {v:?} ({e})"
            )
        })
}

fn row(s: &Value) -> Vec<String> {
    let slot = &s["timeslot"];
    vec![
        cell(&s["id"]),
        cell(&s["state"]),
        cell(&s["definition_id"]),
        cell(&s["owner_id"]),
        if slot.is_null() {
            "asap".into()
        } else {
            format!("{} .. {}", cell(&slot["start"]), cell(&slot["end"]))
        },
        cell(&s["worker_id"]),
    ]
}

const HEADERS: [&str; 6] = ["ID", "STATE", "DEFINITION", "OWNER", "SLOT", "WORKER"];

fn show(s: &Value) {
    table(&HEADERS, &[row(s)]);
    if let Some(p) = s["allocated_ports"].as_object().filter(|p| !p.is_empty()) {
        let ports: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("ports: {}", ports.join(" "));
    }
}

/// `POST /api/v1/sessions/{id}/{action}` with `body`; prints the session's new state.
fn act(
    client: &Client,
    id: &str,
    action: &str,
    body: &Value,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let v = client.post(&format!("/api/v1/sessions/{}/{action}", segment(id)), body)?;
    if json {
        print_json(&v)?;
    } else {
        println!("session {} is {}", cell(&v["id"]), cell(&v["state"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a sessions subcommand.
pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    let client = Client::from_env()?;
    match c {
        Command::Book {
            definition,
            owner,
            start,
            end,
            minutes,
            region,
            reservation,
            idempotency_key,
            dry_run,
            queue,
            json,
        } => {
            let start_t = start
                .as_deref()
                .map(|v| parse_time("start", v))
                .transpose()?;
            let end_t = match (end.as_deref(), minutes, start_t) {
                (Some(v), _, _) => Some(parse_time("end", v)?),
                (None, Some(m), Some(s)) => Some(s + chrono::Duration::minutes(i64::from(m))),
                (None, Some(_), None) => anyhow::bail!("--minutes needs --start"),
                (None, None, _) => None,
            };
            let body = json!({
                "definition_id": definition,
                "owner_id": owner,
                "timeslot_start": start_t,
                "timeslot_end": end_t,
                "region": region,
                "reservation_id": reservation,
                "idempotency_key": idempotency_key,
                "dry_run": dry_run,
                "queue": queue,
            });
            match client.post("/api/v1/sessions", &body) {
                Ok(v) => {
                    if json {
                        print_json(&v)?;
                    } else {
                        match v["session"].as_object() {
                            Some(_) => println!(
                                "{} session {}: {}",
                                if v["created"] == true {
                                    "booked"
                                } else {
                                    "already booked:"
                                },
                                cell(&v["session"]["id"]),
                                admission_line(&v["admission"])
                            ),
                            None => println!("dry run: {}", admission_line(&v["admission"])),
                        }
                    }
                    let admitted = v["admission"]["decision"] == "accepted";
                    Ok(if admitted {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    })
                }
                Err(e) => match e.downcast::<ServerError>() {
                    Ok(se) if se.code == "not_admitted" => {
                        if json {
                            print_json(&se.body)?;
                        } else {
                            println!("{}", refusal_line(&se.body["error"]["refusal"]));
                        }
                        Ok(ExitCode::from(2))
                    }
                    Ok(se) => Err(se.into()),
                    Err(e) => Err(e),
                },
            }
        }
        Command::List {
            state,
            owner,
            worker,
            definition,
            limit,
            after,
            json,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            for (k, v) in [
                ("state", state),
                ("owner_id", owner),
                ("worker_id", worker),
                ("definition", definition),
                ("after", after),
                ("limit", limit.map(|l| l.to_string())),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let v = client.get("/api/v1/sessions", &q)?;
            if json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .map(|a| a.iter().map(row).collect())
                    .unwrap_or_default();
                table(&HEADERS, &rows);
                println!(
                    "{} of {} session(s){}",
                    rows.len(),
                    cell(&v["total"]),
                    match v["next"].as_str() {
                        Some(n) => format!("; next page: --after {n}"),
                        None => String::new(),
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, json } => {
            let v = client.get(&format!("/api/v1/sessions/{}", segment(&id)), &[])?;
            if json {
                print_json(&v)?;
            } else {
                show(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { id, reason, json } => {
            act(&client, &id, "cancel", &json!({ "reason": reason }), json)
        }
        Command::Connect { id, json } => act(&client, &id, "connect", &json!({}), json),
        Command::Explain { id, json } => {
            let v = client.get(&format!("/api/v1/sessions/{}/explain", segment(&id)), &[])?;
            if json {
                print_json(&v)?;
            } else {
                println!("{} ({})", cell(&v["summary"]), cell(&v["state"]));
                if let Some(u) = v["unschedulable"].as_object() {
                    if let Some(reasons) = u.get("reasons").and_then(Value::as_array) {
                        for r in reasons {
                            println!("  {}: {}", cell(&r["worker"]), r["reason"]);
                        }
                    }
                }
                if !v["planned"].is_null() {
                    println!("plan: {}", admission_line(&v["planned"]));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::LabYaml { id } => {
            print!(
                "{}",
                client.get_text(&format!("/api/v1/sessions/{}/lab.yaml", segment(&id)))?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

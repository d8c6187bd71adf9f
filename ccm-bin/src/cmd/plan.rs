//! `ccm plan SCENARIO.yaml`: plan capacity for a scenario and compare with the original policy.

use ccm_core::planner::{
    load_reference, load_scenario, plan_with_progress, simulate_baseline, timeline, Action,
    BaselineReport, Plan, ReferenceDay, Scenario,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ccm plan`.
///
/// Exit status: 0 when every session is served, 2 when some are not (they are listed with
/// reasons), 1 on errors such as a bad scenario file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario YAML file (format: config/scenarios/README.md).
    #[arg(required_unless_present = "live")]
    pub scenario: Option<PathBuf>,
    /// Ask a running daemon (CCM_URL, CCM_API_TOKEN) for the plan its controller would make now.
    #[arg(long, conflicts_with_all = ["timeline", "horizon_hours"])]
    pub live: bool,
    /// Print the plan and the baseline's figures as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write a timeline picture: `*.svg` → SVG, anything else → a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Override the scenario's planning horizon, in hours.
    #[arg(long, value_name = "HOURS")]
    pub horizon_hours: Option<u32>,
    /// Results of the exact reference solver (tools/plan-reference/) to compare the cost with;
    /// default: `results.json` beside the scenario, when there is one.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
}

/// The reference day for the scenario: from `--reference`, or `results.json` beside it.
fn reference_for(args: &Args, scenario: &std::path::Path) -> anyhow::Result<Option<ReferenceDay>> {
    let path = match &args.reference {
        Some(p) => p.clone(),
        None => {
            let beside = scenario
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("results.json");
            if !beside.is_file() {
                return Ok(None);
            }
            beside
        }
    };
    let results = load_reference(&path)?;
    let day = results.day_for(scenario).cloned();
    if day.is_none() && args.reference.is_some() {
        anyhow::bail!("{}: no entry for {}", path.display(), scenario.display());
    }
    Ok(day)
}

/// Runs `ccm plan`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(path) = args.scenario.as_ref().filter(|_| !args.live) else {
        return super::workers::live_plan(args.json);
    };
    let mut scenario = load_scenario(path)?;
    if let Some(h) = args.horizon_hours {
        scenario.policy.horizon_hours = h;
    }
    let reference = reference_for(&args, path)?;
    let input = scenario.input();
    let total = input.sessions.len();
    let show_progress = total >= 1000;
    let mut stderr = std::io::stderr();
    let plan = plan_with_progress(&input, &scenario.policy, &mut |done, all| {
        if show_progress && all > 0 {
            let _ = write!(stderr, "\rplanning: {done}/{all} sessions placed");
            let _ = stderr.flush();
        }
    });
    if show_progress {
        eprintln!("\rplanning: done{:30}", "");
        eprintln!("simulating the original policy (30 s cycles)…");
    }
    let baseline = simulate_baseline(&input, &scenario.policy);
    let summary = summary(&scenario, &plan, &baseline, reference.as_ref());
    if let Some(path) = &args.timeline {
        let is_svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        let body = if is_svg {
            timeline::svg(&plan, &input)
        } else {
            let title = format!("ccm plan — {}", scenario.file);
            timeline::html(&plan, &input, &title, &summary)
        };
        std::fs::write(path, body)
            .map_err(|e| anyhow::anyhow!("cannot write timeline {}: {e}", path.display()))?;
        if !args.json {
            eprintln!("timeline written to {}", path.display());
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "scenario": scenario.file,
            "plan": plan,
            "baseline": baseline,
            "reference": reference.as_ref().map(|r| serde_json::json!({
                "file": r.file,
                "solver_best_usd": r.solver_best_usd,
                "solver_bound_usd": r.solver_bound_usd,
                "solver_status": r.solver_status,
                "solver_seconds": r.solver_seconds,
                "cost_over_solver_best": r.ratio(plan.cost.cost_usd),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{summary}");
    }
    Ok(if plan.unserved.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// The readable summary.
fn summary(s: &Scenario, p: &Plan, b: &BaselineReport, r: Option<&ReferenceDay>) -> String {
    let mut o = String::new();
    let served = p.assignments.iter().filter(|a| !a.bound).count();
    let _ = writeln!(
        o,
        "Scenario {} — planned at {}, horizon {} h",
        s.file,
        p.now.format("%Y-%m-%d %H:%M UTC"),
        s.policy.horizon_hours
    );
    let _ = writeln!(
        o,
        "Sessions: {} ({} served, {} already bound, {} unserved, {} beyond the horizon)\n",
        s.sessions.len(),
        served,
        p.assignments.len() - served,
        p.unserved.len(),
        p.beyond_horizon
    );
    let _ = writeln!(
        o,
        "{:<28}{:>22}{:>22}",
        "", "planner (ccm)", "original policy"
    );
    let mut names: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for t in &p.cost.per_template {
        names.entry(&t.template).or_default().0 =
            format!("{} ({:.1} h)", t.workers, t.worker_hours);
    }
    for t in &b.per_template {
        names.entry(&t.template).or_default().1 =
            format!("{} ({:.1} h)", t.workers, t.worker_hours);
    }
    let _ = writeln!(o, "Workers per template");
    for (name, (a, bb)) in &names {
        let _ = writeln!(o, "  {:<26}{:>22}{:>22}", name, a, bb);
    }
    let saved = if b.worker_hours > 0.0 {
        format!(
            "  ({:.1} % fewer)",
            (1.0 - p.cost.worker_hours / b.worker_hours) * 100.0
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "{:<28}{:>22.1}{:>22.1}{saved}",
        "Worker-hours", p.cost.worker_hours, b.worker_hours
    );
    let _ = writeln!(
        o,
        "{:<28}{:>22.2}{:>22.2}",
        "Cost (USD)", p.cost.cost_usd, b.cost_usd
    );
    let _ = writeln!(
        o,
        "{:<28}{:>22}{:>22}",
        "Workers launched / peak",
        p.actions
            .iter()
            .filter(|a| matches!(a, Action::ScaleUp { .. }))
            .count(),
        format!("{} / {}", b.workers_launched, b.peak_workers)
    );
    let _ = writeln!(
        o,
        "{:<28}{:>22}{:>22}",
        "Served late / unserved",
        format!("0 / {}", p.unserved.len()),
        format!("{} / {}", b.served_late, b.unserved)
    );
    let _ = writeln!(
        o,
        "\nLower bound (USD)           {:.2}   cost / lower bound = {:.3}",
        p.cost.lower_bound_usd, p.cost.cost_over_lower_bound
    );
    if let Some(r) = r {
        let _ = writeln!(
            o,
            "Offline optimum (CP-SAT, {:.0} s, {}): best {:.2}, proven bound {:.2}   cost / best = {:.3} (gap {:+.1} %)",
            r.solver_seconds,
            r.solver_status,
            r.solver_best_usd,
            r.solver_bound_usd,
            r.ratio(p.cost.cost_usd),
            (r.ratio(p.cost.cost_usd) - 1.0) * 100.0
        );
    }
    let u = &p.cost.utilisation;
    let _ = writeln!(
        o,
        "Utilisation of billed capacity: cpu {}, memory {}, storage {}, nodes {}",
        pct(u.cpu),
        pct(u.memory),
        pct(u.storage),
        pct(u.nodes)
    );
    let _ = writeln!(o, "Re-planning: {} kept, {} moved", p.kept, p.moved);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &p.actions {
        *kinds.entry(a.kind()).or_insert(0) += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(o, "Actions: {}", kinds.join(", "));
    for a in p.actions.iter().take(8) {
        let _ = writeln!(o, "  {}", describe(a));
    }
    if p.actions.len() > 8 {
        let _ = writeln!(o, "  … {} more (use --json)", p.actions.len() - 8);
    }
    if !p.unserved.is_empty() {
        let _ = writeln!(o, "\nUnserved sessions ({}):", p.unserved.len());
        for u in p.unserved.iter().take(20) {
            let earliest = u
                .earliest_start
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "none in the horizon".into());
            let _ = writeln!(
                o,
                "  {} ({}): {}\n    earliest slot start that would work: {}",
                u.session_id, u.definition_id, u.reason, earliest
            );
        }
        if p.unserved.len() > 20 {
            let _ = writeln!(o, "  … {} more (use --json)", p.unserved.len() - 20);
        }
    }
    o
}

fn describe(a: &Action) -> String {
    let t = |x: &chrono::DateTime<chrono::Utc>| x.format("%m-%d %H:%M").to_string();
    match a {
        Action::ScaleUp {
            worker_id,
            template,
            region,
            launch_at,
            ready_by,
            sessions,
        } => format!(
            "{} scale up {worker_id} ({template}, {region}), ready by {}, {} sessions",
            t(launch_at),
            t(ready_by),
            sessions.len()
        ),
        Action::Restart {
            worker_id,
            launch_at,
            ready_by,
            sessions,
        } => format!(
            "{} restart {worker_id}, ready by {}, {} sessions",
            t(launch_at),
            t(ready_by),
            sessions.len()
        ),
        Action::CancelDrain { worker_id, at } => format!("{} cancel drain of {worker_id}", t(at)),
        Action::Drain { worker_id, at } => format!("{} drain {worker_id}", t(at)),
        Action::Stop { worker_id, at } => format!("{} stop {worker_id}", t(at)),
        Action::ForceStop {
            worker_id,
            at,
            sessions,
        } => format!(
            "{} force-stop {worker_id} (drain timeout), terminating {} sessions",
            t(at),
            sessions.len()
        ),
    }
}

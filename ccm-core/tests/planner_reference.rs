//! The planner against the exact reference solver (tools/plan-reference/): on every committed
//! day of config/scenarios/reference/ the plan costs at most 1.02 × the best plan CP-SAT found
//! (results.json, written by the solver), its own lower bound stays below that best (a lower
//! bound above a feasible plan would be wrong), and re-planning after one new booking moves at
//! most 1 % of the assignments.

use ccm_core::planner::{load_reference, load_scenario, plan, ReferenceResults, Scenario};
use std::path::{Path, PathBuf};

/// ccm's cost over the solver's best must stay at or below this on every day.
const MAX_OVER_BEST: f64 = 1.02;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn results() -> ReferenceResults {
    load_reference(&root().join("config/scenarios/reference/results.json"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn scenario(file: &str) -> Scenario {
    load_scenario(&root().join(file)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_generated_day_has_a_reference_result() {
    let r = results();
    let dir = root().join("config/scenarios/reference");
    let mut days: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("day-") && n.ends_with(".yaml"))
        .collect();
    days.sort();
    assert!(days.len() >= 8, "{days:?}");
    for d in &days {
        let entry = r.day_for(Path::new(d));
        assert!(entry.is_some(), "{d} has no entry in results.json");
        let entry = entry.unwrap();
        let s = scenario(&entry.file);
        assert_eq!(
            s.sessions.len(),
            entry.sessions,
            "{d}: sessions changed since solved"
        );
        assert!(
            entry.solver_bound_usd <= entry.solver_best_usd + 1e-6,
            "{entry:?}"
        );
    }
    let sizes: Vec<usize> = r.days.iter().map(|d| d.sessions).collect();
    assert!(
        sizes.iter().any(|&n| n <= 30) && sizes.iter().any(|&n| n >= 120),
        "{sizes:?}"
    );
}

#[test]
fn plans_are_within_two_percent_of_the_solver_best() {
    let r = results();
    let mut ratios = Vec::new();
    let mut over = Vec::new();
    for d in &r.days {
        let s = scenario(&d.file);
        let p = plan(&s.input(), &s.policy);
        assert!(p.unserved.is_empty(), "{}: {:?}", d.file, p.unserved);
        let ratio = d.ratio(p.cost.cost_usd);
        // The lower bound is below the optimum, so below any plan the solver found.
        assert!(
            p.cost.lower_bound_usd <= d.solver_best_usd + 1e-6,
            "{}: lower bound {} above the solver's best {}",
            d.file,
            p.cost.lower_bound_usd,
            d.solver_best_usd
        );
        assert!(
            p.cost.cost_usd + 1e-6 >= p.cost.lower_bound_usd,
            "{}",
            d.file
        );
        eprintln!(
            "{}: cost {:.2}, lower bound {:.2}, solver best {:.2} (bound {:.2}), cost / best {:.4}",
            d.file,
            p.cost.cost_usd,
            p.cost.lower_bound_usd,
            d.solver_best_usd,
            d.solver_bound_usd,
            ratio
        );
        if ratio > MAX_OVER_BEST {
            over.push(format!("{}: {:.4}", d.file, ratio));
        }
        ratios.push(ratio);
    }
    assert!(
        over.is_empty(),
        "days above {MAX_OVER_BEST} × the solver's best: {over:?} (all: {ratios:?})"
    );
}

#[test]
fn replanning_after_one_new_booking_moves_at_most_one_percent() {
    for file in [
        "config/scenarios/exam-day.yaml",
        "config/scenarios/reference/day-10-150-random.yaml",
    ] {
        let s = scenario(file);
        let mut input = s.input();
        let first = plan(&input, &s.policy);
        let mut extra = input.sessions[input.sessions.len() / 2].clone();
        extra.id = "zz-new-booking".into();
        input.sessions.push(extra);
        input.previous = first.prior_assignments();
        let second = plan(&input, &s.policy);
        assert!(second.unserved.is_empty(), "{file}");
        assert!(second
            .assignments
            .iter()
            .any(|a| a.session_id == "zz-new-booking"));
        let total = first.assignments.len();
        assert_eq!(second.kept + second.moved, total, "{file}");
        assert!(
            second.moved * 100 <= total,
            "{file}: moved {} of {total}",
            second.moved
        );
    }
}

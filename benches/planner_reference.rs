//! Plan quality against the exact reference solver: plans every committed day of
//! config/scenarios/reference/ and prints ccm's cost over the best plan CP-SAT found in 60 s
//! (results.json, from tools/plan-reference/), with the median and the worst; the target is
//! ≤ 1.02 × on every day. Then times planning each size class against the original's reactive
//! policy replayed on the same day.

use ccm_core::planner::{load_reference, load_scenario, plan, simulate_baseline};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;

const TARGET: f64 = 1.02;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let results = match load_reference(&root.join("config/scenarios/reference/results.json")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let mut ratios = Vec::new();
    let mut days = Vec::new();
    eprintln!(
        "{:<40}{:>9}{:>11}{:>11}{:>11}{:>11}{:>10}",
        "day", "sessions", "ccm $", "ccm LB $", "best $", "bound $", "ccm/best"
    );
    for d in &results.days {
        let s = match load_scenario(&root.join(&d.file)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let input = s.input();
        let p = plan(&input, &s.policy);
        let r = d.ratio(p.cost.cost_usd);
        eprintln!(
            "{:<40}{:>9}{:>11.2}{:>11.2}{:>11.2}{:>11.2}{:>10.4}{}",
            Path::new(&d.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            d.sessions,
            p.cost.cost_usd,
            p.cost.lower_bound_usd,
            d.solver_best_usd,
            d.solver_bound_usd,
            r,
            if r > TARGET { "  ABOVE TARGET" } else { "" }
        );
        ratios.push(r);
        days.push((d.sessions, input, s.policy));
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let worst = sorted.last().copied().unwrap_or(f64::NAN);
    eprintln!(
        "ccm cost / solver best: median {median:.4}, worst {worst:.4}, {} of {} days within {TARGET}",
        ratios.iter().filter(|&&r| r <= TARGET).count(),
        ratios.len()
    );
    let mut g = c.benchmark_group("planner_reference_days");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(3));
    for (n, input, policy) in days
        .iter()
        .filter(|(n, _, _)| [20, 60, 150].contains(n))
        .take(3)
    {
        g.bench_function(format!("plan_{n}_sessions"), |b| {
            b.iter(|| plan(black_box(input), policy))
        });
        g.bench_function(format!("original_policy_{n}_sessions"), |b| {
            b.iter(|| simulate_baseline(black_box(input), policy))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

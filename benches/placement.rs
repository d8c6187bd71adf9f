//! Placement benchmark: place one session into fleets of 100, 1,000 and 10,000 workers
//! (mixed templates and licences, 50–90 % full) — the indexed `Fleet` beside the naive
//! filter-and-score-every-worker placer, in the same run.

use ccm_benches::{mixed_fleet, typical_request};
use ccm_core::placement::{naive, Fleet, Scoring};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;

fn place_one(c: &mut Criterion) {
    let req = typical_request();
    let mut group = c.benchmark_group("place_one");
    group
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [100usize, 1_000, 10_000] {
        let fleet = match Fleet::new(mixed_fleet(n, 42), Scoring::default()) {
            Ok(f) => f,
            Err(e) => panic!("bench fleet: {e}"),
        };
        // Both must agree, and the request must be placeable (else we'd time explanations).
        let fast = fleet.place(&req);
        assert!(fast.is_ok(), "bench request must fit");
        assert_eq!(fast, naive::place(fleet.workers(), &req, fleet.scoring()));
        group.bench_with_input(BenchmarkId::new("fleet", n), &n, |b, _| {
            b.iter(|| fleet.place(black_box(&req)))
        });
        group.bench_with_input(BenchmarkId::new("naive", n), &n, |b, _| {
            b.iter(|| naive::place(black_box(fleet.workers()), black_box(&req), fleet.scoring()))
        });
    }
    group.finish();
}

criterion_group!(benches, place_one);
criterion_main!(benches);

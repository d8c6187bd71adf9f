//! The time-aware capacity planner and autoscaler (domain.md §5).
//!
//! [`plan`] is a pure, deterministic function of a [`PlanInput`] (now, sessions with their
//! [`Requirements`](crate::placement::filter::Requirements) and slots, the fleet, the templates,
//! optionally the previous plan's assignments) and a [`Policy`]. It packs every session of the
//! horizon onto running, booting, draining, stopped and *planned* workers so that no worker is
//! over capacity (cpu, memory, storage, CML nodes, ports) at any instant, opens a worker only when
//! that is the cheapest option, and answers with the scaling [`Action`]s, the billed cost, the
//! [lower bound](cost) it is measured against, and an explanation for every session it cannot
//! serve.
//!
//! * Time is `i64` seconds inside; each worker's load is a step function ([`profile`]).
//! * A worker idle between two sessions is kept through the gap when the gap is at most
//!   [`Policy::keep_idle_secs`] (grace period, or lead + cooldown, whichever is longer); longer
//!   gaps stop it and relaunch it `lead` before the next session — cheaper than paying the gap.
//! * [`baseline`] replays the original's reactive policy on the same input for comparison.
//! * [`scenario`] reads scenario YAML files (`config/scenarios/`), [`timeline`] draws a plan.
//!
//! ```
//! use ccm_core::planner::{plan, PlanInput, PlannedSession, Policy};
//! use ccm_core::placement::filter::Requirements;
//! use ccm_core::resources::Load;
//! use ccm_core::session::SessionState;
//! use ccm_core::timeslot::Timeslot;
//! use chrono::{Duration, TimeZone, Utc};
//!
//! let templates = ccm_core::template::seed_templates().unwrap();
//! let now = Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap();
//! let start = now + Duration::hours(2);
//! let req = Requirements { load: Load { cpu_cores: 4, memory_gb: 16, storage_gb: 20, nodes: 5 },
//!     license_affinity: vec![], cml_versions: Default::default(), node_definitions: vec![],
//!     ami: None, ports: vec!["r1_ssh".into()], region: None };
//! let sessions = (0..20).map(|i| PlannedSession { id: format!("s{i:02}"), definition_id: "lab".into(),
//!     requirements: req.clone(), slot: Timeslot::new(start, start + Duration::hours(2)).unwrap(),
//!     state: SessionState::Pending, worker_id: None }).collect();
//! let input = PlanInput { now, sessions, workers: vec![], templates, previous: vec![] };
//! let p = plan(&input, &Policy::default());
//! assert!(p.unserved.is_empty());
//! // 20 sessions of 4 cores: two 48-core workers, launched 35 minutes before the slot.
//! assert_eq!(p.cost.workers, 2);
//! assert_eq!(p.actions[0].at(), start - Duration::minutes(35));
//! assert!(p.cost.cost_usd >= p.cost.lower_bound_usd - 1e-9, "{:?}", p.cost); // equal here, up to rounding
//! ```

pub mod baseline;
pub mod cost;
mod pack;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod reference;
pub mod scenario;
pub mod timeline;

pub use baseline::{simulate_baseline, BaselineReport};
pub use cost::{CostReport, TemplateCost, Utilisation};
pub use plan::{
    Action, Assignment, Plan, PlanInput, PlannedSession, PlannedWorker, PriorAssignment, Run,
    TemplateVerdict, Unserved, WorkerOrigin,
};
pub use policy::Policy;
pub use reference::{load_reference, parse_reference, ReferenceDay, ReferenceResults};
pub use scenario::{load_scenario, parse_scenario, Scenario, ScenarioError};

/// Plans capacity for `input` under `policy`: a pure function (no clock, no I/O) whose answer
/// does not depend on the order of the input's sessions or workers.
pub fn plan(input: &PlanInput, policy: &Policy) -> Plan {
    pack::run(input, policy, &mut |_, _| {})
}

/// [`plan`], calling `progress(done, total)` now and then while sessions are placed.
pub fn plan_with_progress(
    input: &PlanInput,
    policy: &Policy,
    progress: &mut dyn FnMut(usize, usize),
) -> Plan {
    pack::run(input, policy, progress)
}

//! Explanations of unschedulable sessions: counts, reasons with numbers, hints, rendering.

mod placement_support;

use ccm_core::license::LicenseType;
use ccm_core::placement::{
    place_batch, template_hint, BatchRequest, FilterKind, Fleet, Hint, Rejection, Scoring,
    Unschedulable,
};
use ccm_core::worker::Worker;
use chrono::{TimeZone, Utc};
use placement_support::*;

fn full_fleet(n: usize) -> Vec<Worker> {
    let t = seed_templates()[0].clone();
    (0..n)
        .map(|i| {
            let mut w = worker(&format!("w{i:02}"), &t);
            w.allocated = load(48, 10, 10, 1);
            w
        })
        .collect()
}

#[test]
fn display_is_readable_and_bounded() {
    let f = Fleet::new(full_fleet(12), Scoring::default()).unwrap();
    let u = f
        .place_or_explain(&req(4, 8, 10, 2, 1), &seed_templates())
        .unwrap_err();
    assert_eq!(u.rejected(FilterKind::Cpu), 12);
    let text = u.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "no worker can take the session (12 workers considered)"
    );
    assert_eq!(lines[1], "  rejected by: cpu 12");
    assert_eq!(lines[2], "  w00: cpu: need 4, free 0");
    assert_eq!(lines[12], "  … and 2 more");
    assert_eq!(
        lines[13],
        "  hint: a new personal-standard worker in us-east-1 would fit"
    );
    assert_eq!(lines.len(), 14);
}

#[test]
fn serde_round_trip_for_machines() {
    let f = Fleet::new(full_fleet(2), Scoring::default()).unwrap();
    let mut u = f
        .place_or_explain(&req(64, 8, 10, 2, 1), &seed_templates())
        .unwrap_err();
    u.earliest_slot = Some(Utc.with_ymd_and_hms(2026, 5, 4, 10, 0, 0).unwrap());
    let json = serde_json::to_value(&u).unwrap();
    assert_eq!(json["rejected_by"]["cpu"], 2);
    assert_eq!(json["rejected_by"]["license"], 0);
    assert_eq!(json["reasons"][1]["worker"], "w01");
    assert_eq!(json["reasons"][1]["reason"]["filter"], "cpu");
    assert_eq!(json["reasons"][1]["reason"]["need"], 64);
    assert_eq!(json["hint"]["kind"], "no_template");
    assert_eq!(
        json["hint"]["why"],
        "no template has ≥ 64 cores (largest: 48)"
    );
    let back: Unschedulable = serde_json::from_value(json).unwrap();
    assert_eq!(back, u);
    assert!(u
        .to_string()
        .ends_with("earliest slot that would work: 2026-05-04T10:00:00+00:00"));
}

#[test]
fn hint_names_a_template_that_fits() {
    let ts = seed_templates();
    // 30 nodes: more than PERSONAL's 20, so only the enterprise template fits
    assert_eq!(
        template_hint(&req(4, 8, 10, 30, 1), &ts),
        Hint::Template {
            template: "enterprise-large".into(),
            region: "us-east-1".into()
        }
    );
    // a region asked for is honoured
    let mut r = req(4, 8, 10, 2, 1);
    r.region = Some("us-west-2".into());
    assert_eq!(
        template_hint(&r, &ts),
        Hint::Template {
            template: "personal-standard".into(),
            region: "us-west-2".into()
        }
    );
    r.load.nodes = 30; // enterprise is not offered in us-west-2
    let h = template_hint(&r, &ts);
    assert_eq!(
        h.to_string(),
        "no template fits: personal-standard (nodes: need 30, free 20 of max_nodes 20); \
         enterprise-large (region: need us-west-2, worker in us-east-1)"
    );
}

#[test]
fn hint_says_why_no_template_fits() {
    let ts = seed_templates();
    let why = |r| template_hint(&r, &ts).to_string();
    assert_eq!(
        why(req(4, 500, 10, 2, 1)),
        "no template has ≥ 500 GB memory (largest: 192 GB)"
    );
    assert_eq!(
        why(req(4, 8, 2000, 2, 1)),
        "no template has ≥ 2000 GB storage (largest: 1000 GB)"
    );
    assert_eq!(
        why(req(4, 8, 10, 600, 1)),
        "no template allows ≥ 600 CML nodes (largest max_nodes: 500)"
    );
    assert_eq!(
        why(req(4, 8, 10, 2, 9000)),
        "no template has ≥ 9000 ports (largest range: 8000)"
    );
    let mut r = req(1, 1, 1, 1, 0);
    r.license_affinity = vec![LicenseType::Evaluation];
    assert_eq!(why(r.clone()), "no template's licence serves EVALUATION");
    r.license_affinity.clear();
    r.region = Some("eu-west-1".into());
    assert_eq!(why(r), "no template launches in eu-west-1");
    let mut r = req(1, 1, 1, 1, 0);
    r.ami = Some(ccm_core::glob::Glob::new("CML-3.*"));
    assert_eq!(why(r), "no template's AMI matches CML-3.*");
    assert_eq!(why_with(&[], req(1, 1, 1, 1, 0)), "no enabled template");
    let mut disabled = ts.clone();
    disabled[1].enabled = false;
    match template_hint(&req(4, 8, 10, 30, 1), &disabled) {
        Hint::NoTemplate { templates, .. } => {
            assert_eq!(templates.len(), 1);
            assert_eq!(templates[0].template, "personal-standard");
            assert_eq!(
                templates[0].reason,
                Rejection::Nodes {
                    need: 30,
                    free: 20,
                    max: 20
                }
            );
        }
        h => panic!("expected no template, got {h:?}"),
    }
}

fn why_with(
    ts: &[ccm_core::template::WorkerTemplate],
    r: ccm_core::placement::Requirements,
) -> String {
    template_hint(&r, ts).to_string()
}

#[test]
fn batch_places_by_slot_then_id_and_updates_capacity() {
    // room for exactly two 20-core sessions
    let t = seed_templates()[0].clone();
    let mut f = Fleet::new(vec![worker("w1", &t)], Scoring::default()).unwrap();
    let at = |h| Utc.with_ymd_and_hms(2026, 5, 4, h, 0, 0).unwrap();
    let mk = |s: &str, h| BatchRequest {
        session: s.into(),
        requirements: req(20, 8, 10, 2, 1),
        slot_start: at(h),
    };
    let out = place_batch(
        &mut f,
        vec![mk("c", 8), mk("a", 9), mk("b", 8)],
        &seed_templates(),
    );
    let order: Vec<(&str, u16)> = out
        .bindings
        .iter()
        .map(|b| (b.session.as_str(), b.ports["p0"]))
        .collect();
    assert_eq!(order, [("b", 2000), ("c", 2001)]);
    assert_eq!(out.unschedulable.len(), 1);
    assert_eq!(out.unschedulable[0].session, "a");
    assert_eq!(
        out.unschedulable[0].why.reasons[0].reason,
        Rejection::Cpu { need: 20, free: 8 }
    );
    assert!(matches!(
        out.unschedulable[0].why.hint.as_deref(),
        Some(Hint::Template { .. })
    ));
    assert!(out.refused.is_empty());
    assert_eq!(f.workers()[0].allocated.cpu_cores, 40);
    // running it again changes nothing: bound sessions keep their bindings
    let again = place_batch(&mut f, vec![mk("c", 8), mk("a", 9), mk("b", 8)], &[]);
    assert_eq!(again.bindings, out.bindings);
    assert_eq!(again.unschedulable.len(), 1);
    assert_eq!(f.workers()[0].allocated.cpu_cores, 40);
}

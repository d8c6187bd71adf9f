//! A plan as a picture: one row per worker (booting, sessions, idle, draining), as a
//! self-contained SVG or HTML page (no scripts, no external files).

/// One session on a worker row: start, end (unix seconds) and its load.
type Span = (i64, i64, [u32; 4]);

use super::pack::secs;
use super::plan::{Plan, PlanInput};
use std::collections::BTreeMap;
use std::fmt::Write;

const LEFT: f64 = 150.0;
const WIDTH: f64 = 1100.0;
const ROW: f64 = 14.0;
const TOP: f64 = 46.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The timeline as an SVG document.
///
/// Grey: booting; green bars: sessions (bar height = the busiest dimension's share of the
/// worker); pale: billed but idle; orange: draining.
pub fn svg(plan: &Plan, input: &PlanInput) -> String {
    let need: BTreeMap<&str, [u32; 4]> = input
        .sessions
        .iter()
        .map(|s| (s.id.as_str(), s.requirements.load.dims()))
        .collect();
    let rows: Vec<_> = plan.workers.iter().filter(|w| !w.runs.is_empty()).collect();
    let mut t0 = secs(plan.now);
    let mut t1 = t0 + 3600;
    for w in &rows {
        for r in &w.runs {
            t0 = t0.min(secs(r.launch_at));
            t1 = t1.max(secs(r.stop_at));
        }
    }
    let span = (t1 - t0).max(1) as f64;
    let x = |t: i64| LEFT + (t - t0) as f64 / span * WIDTH;
    let height = TOP + rows.len() as f64 * (ROW + 2.0) + 40.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="10">"#,
        w = LEFT + WIDTH + 20.0
    );
    let _ = write!(
        out,
        r#"<text x="4" y="14" font-size="12">{} workers · {:.1} worker-hours · ${:.2} · {:.2}× lower bound</text>"#,
        plan.cost.workers,
        plan.cost.worker_hours,
        plan.cost.cost_usd,
        plan.cost.cost_over_lower_bound
    );
    // Legend.
    for (i, (label, color)) in [
        ("booting", "#9e9e9e"),
        ("sessions", "#2e7d32"),
        ("idle (billed)", "#c8e6c9"),
        ("draining", "#ff9800"),
    ]
    .iter()
    .enumerate()
    {
        let lx = LEFT + i as f64 * 110.0;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="20" width="10" height="10" fill="{color}"/><text x="{}" y="29">{label}</text>"#,
            lx + 14.0
        );
    }
    // Hour ticks.
    let first_hour = (t0 + 3599).div_euclid(3600) * 3600;
    let step = if span > 3.0 * 86400.0 { 6 * 3600 } else { 3600 };
    let mut h = first_hour;
    while h <= t1 {
        let hx = x(h);
        let label = super::pack::ts(h).format("%d %H:%M").to_string();
        let _ = write!(
            out,
            r##"<line x1="{hx:.1}" y1="{TOP}" x2="{hx:.1}" y2="{:.1}" stroke="#eee"/><text x="{hx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            height - 30.0,
            height - 18.0
        );
        h += step;
    }
    let mut by_worker: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for a in &plan.assignments {
        let n = need.get(a.session_id.as_str()).copied().unwrap_or([0; 4]);
        by_worker
            .entry(a.worker_id.as_str())
            .or_default()
            .push((secs(a.start), secs(a.end), n));
    }
    for (i, w) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (ROW + 2.0);
        let _ = write!(
            out,
            r#"<text x="4" y="{:.1}">{} ({})</text>"#,
            y + ROW - 3.0,
            esc(&w.id),
            esc(&w.template)
        );
        let idle_color = if w.draining_since.is_some() {
            "#ff9800"
        } else {
            "#c8e6c9"
        };
        for r in &w.runs {
            let (l, rd, st) = (secs(r.launch_at), secs(r.ready_at), secs(r.stop_at));
            let _ = write!(
                out,
                r##"<rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{ROW}" fill="#9e9e9e"><title>{} booting</title></rect>"##,
                x(l),
                (x(rd.min(st).max(l)) - x(l)).max(0.0),
                esc(&w.id)
            );
            let _ = write!(
                out,
                r#"<rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{ROW}" fill="{idle_color}"/>"#,
                x(rd.min(st)),
                (x(st) - x(rd.min(st))).max(0.0)
            );
        }
        // Session load as a step function.
        let cap = w.capacity.dims();
        let mut ev: Vec<(i64, i32, [u32; 4])> = Vec::new();
        for (a, b, n) in by_worker.get(w.id.as_str()).into_iter().flatten() {
            ev.push((*a, 1, *n));
            ev.push((*b, -1, *n));
        }
        ev.sort_by_key(|e| (e.0, e.1));
        let mut load = [0i64; 4];
        let mut count = 0i64;
        for k in 0..ev.len() {
            let (t, sign, n) = ev[k];
            for (l, x) in load.iter_mut().zip(n) {
                *l += i64::from(sign) * i64::from(x);
            }
            count += i64::from(sign);
            let Some(&(next, _, _)) = ev.get(k + 1) else {
                break;
            };
            if next <= t || count <= 0 {
                continue;
            }
            let share = (0..4)
                .filter(|&d| cap[d] > 0)
                .map(|d| load[d] as f64 / f64::from(cap[d]))
                .fold(0.0, f64::max)
                .min(1.0);
            let hgt = (ROW * share).max(2.0);
            let _ = write!(
                out,
                r##"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{hgt:.1}" fill="#2e7d32"><title>{} sessions, {:.0}% full</title></rect>"##,
                x(t),
                y + ROW - hgt,
                (x(next) - x(t)).max(0.5),
                count,
                share * 100.0
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A self-contained HTML page: `summary` (plain text) above the SVG timeline.
pub fn html(plan: &Plan, input: &PlanInput, title: &str, summary: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:16px}}pre{{background:#f6f6f6;padding:8px}}</style>\
         </head><body><h1>{t}</h1><pre>{s}</pre>{svg}</body></html>\n",
        t = esc(title),
        s = esc(summary),
        svg = svg(plan, input)
    )
}

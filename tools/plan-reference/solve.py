#!/usr/bin/env python3
"""Exact CP-SAT model of ccm's planning problem for small days, compared with `ccm plan`.

For every scenario file it prints ccm's cost and lower bound (from `ccm plan --json`), the
solver's best solution and its proven bound, and writes them to a results file (JSON) that the
Rust tests and benches read without running the solver.

The model (times in whole minutes from the scenario's `now`):

* every session on exactly one worker; a worker is one of a pool per template, the template
  must fit the session statically (licence tier, region, CML nodes ≤ max_nodes, ports, the
  static dimensions);
* capacity (cpu, memory, storage, nodes, ports) at every instant: at each distinct slot start,
  the sessions running then on a worker fit its capacity;
* billing as ccm bills (domain rule of the planner): a worker runs from `lead` before the first
  session of a run to the end of its last one; an idle gap of at most
  keep = max(grace, lead + cooldown) is billed (a stop and relaunch would break the cooldown or
  cost more than the gap), a longer gap stops the worker and relaunches it `lead` before the next
  session. Equivalently the billed time of a worker is the length of the union of
  [start − keep, end) over its sessions, minus (keep − lead) per connected run. With
  cooldown = 0 and grace ≤ lead this is exactly the union of [start − lead, end).

Workers of a template that another template dominates on the day (same or lower price, at least
the same capacity in every dimension, hosts every session of the day the other hosts, a startup
no longer, the same billing rule and no per-region cap) are left out: any solution using one can use the dominating
template instead at no higher cost, so the optimum is unchanged.

The pool of each template holds ccm's workers of it + max(2, 10 %) (so the model stays small
enough to search in 60 s on one thread);
the proven bound is the optimum's bound for that pool size (a plan with more workers of a
template than that is not searched). ccm's own plan is given to the solver as a hint, so the
solver's best is never worse than ccm's.
"""
import argparse
import datetime as dt
import glob
import json
import math
import os
import subprocess
import sys
import time

import yaml
from ortools.sat.python import cp_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_DIR = os.path.join(ROOT, "config", "scenarios", "reference")
PRICE_SCALE = 10_000  # USD per hour → integer units
DEFAULT_PRICE = 3.9641
DEFAULT_STARTUP = 20
SERVES = {
    "ENTERPRISE": {"ENTERPRISE", "PERSONAL"},
    "PERSONAL": {"PERSONAL"},
    "EVALUATION": {"EVALUATION"},
}


def ts(x):
    if isinstance(x, dt.datetime):
        return x if x.tzinfo else x.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(str(x).replace("Z", "+00:00"))


def load_day(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    now = ts(doc["now"])
    pol = {"lead_minutes": 35, "grace_minutes": 30, "cooldown_minutes": 10}
    pol.update(doc.get("policy") or {})
    if "templates" in doc:
        tdoc = doc["templates"]
    else:
        with open(os.path.join(os.path.dirname(path), doc["templates_file"])) as f:
            tdoc = yaml.safe_load(f)["templates"]
    templates = []
    for t in tdoc:
        if t.get("enabled", True) is False:
            continue
        cap = t["capacity"]
        pr = t.get("port_range", {"start": 2000, "end": 9999})
        startup = int(t.get("startup_minutes", DEFAULT_STARTUP))
        lead = max(int(pol["lead_minutes"]), startup)
        templates.append(
            {
                "name": t["name"],
                "price": float(t.get("cost_per_hour_usd", DEFAULT_PRICE)),
                "cap": [
                    cap["cpu_cores"],
                    cap["memory_gb"],
                    cap["storage_gb"],
                    t["max_nodes"],
                    max(0, pr["end"] - pr["start"] + 1),
                ],
                "license": t["license_type"],
                "regions": list(t["regions"]),
                "startup": startup,
                "lead": lead,
                "keep": max(int(pol["grace_minutes"]), lead + int(pol["cooldown_minutes"])),
                "max_per_region": t.get("max_workers_per_region"),
                "ami": t.get("ami_pattern"),
            }
        )
    defs = {}
    for d in doc["definitions"]:
        rr = d["resource_requirements"]
        ports = d.get("ports", len(d.get("port_template", [])))
        defs[d["id"]] = {
            "need": [rr["cpu_cores"], rr["memory_gb"], rr["storage_gb"], d["node_count"], ports],
            "license": list(d.get("license_affinity", [])),
        }
    if doc.get("waves") or doc.get("workers"):
        raise SystemExit(f"{path}: the reference model takes explicit sessions and no fleet only")
    sessions = []
    for s in doc["sessions"]:
        start = int((ts(s["start"]) - now).total_seconds() // 60)
        sessions.append(
            {
                "id": s["id"],
                "def": s["definition"],
                "need": defs[s["definition"]]["need"],
                "license": defs[s["definition"]]["license"],
                "region": s.get("region"),
                "a": start,
                "b": start + int(s["duration_minutes"]),
            }
        )
    sessions.sort(key=lambda s: (s["a"], s["id"]))
    return templates, sessions


def fits(t, s):
    if s["license"] and not any(l in SERVES[t["license"]] for l in s["license"]):
        return False
    if s["region"] and s["region"] not in t["regions"]:
        return False
    return all(n <= c for n, c in zip(s["need"], t["cap"]))


def dominates(a, b, sessions):
    return (
        a is not b
        and a["price"] <= b["price"]
        and all(x >= y for x, y in zip(a["cap"], b["cap"]))
        and all(fits(a, s) for s in sessions if fits(b, s))
        and a["startup"] <= b["startup"]
        and a["lead"] <= b["lead"]
        and a["keep"] == b["keep"]
        and a["ami"] == b["ami"]
        and a["max_per_region"] is None
    )


def run_ccm(ccm, path):
    out = subprocess.run([ccm, "plan", "--json", path], capture_output=True, text=True)
    if out.returncode not in (0, 2):
        raise SystemExit(f"ccm plan {path} failed: {out.stderr}")
    return json.loads(out.stdout)["plan"]


def peak(sessions):
    ev = sorted([(s["a"], 1) for s in sessions] + [(s["b"], -1) for s in sessions])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def solve_day(path, ccm, seconds, threads, hint=True):
    templates, sessions = load_day(path)
    plan = run_ccm(ccm, path)
    if plan["unserved"]:
        raise SystemExit(f"{path}: ccm leaves sessions unserved; the reference needs a full plan")
    dom = lambda a, b: dominates(a, b, sessions)
    kept = [t for t in templates if not any(dom(o, t) and not dom(t, o) for o in templates)]
    # Keep the first of equivalent templates only.
    uniq = []
    for t in kept:
        if not any(dom(u, t) for u in uniq):
            uniq.append(t)
    kept = uniq
    by_name = {t["name"]: t for t in templates}

    def host(tname):
        t = by_name[tname]
        if t in kept:
            return t
        return next(o for o in kept if dom(o, t))

    sid = {s["id"]: i for i, s in enumerate(sessions)}
    ccm_worker_of = {a["session_id"]: a["worker_id"] for a in plan["assignments"]}
    ccm_tpl = {w["id"]: w["template"] for w in plan["workers"]}
    # ccm's workers, mapped onto kept templates, ordered by their first session.
    ccm_groups = {}
    for s_id, w_id in ccm_worker_of.items():
        ccm_groups.setdefault(w_id, []).append(sid[s_id])
    pools_hint = {t["name"]: [] for t in kept}
    for w_id, idxs in ccm_groups.items():
        pools_hint[host(ccm_tpl[w_id])["name"]].append(sorted(idxs))

    # The hint as (template name, pool index) per session: ccm's workers of a template in the
    # order of their first session (the order the symmetry breaking below asks for).
    hint_of = {}
    if hint:
        for tname, groups in pools_hint.items():
            for k, idxs in enumerate(sorted(groups)):
                for i in idxs:
                    hint_of[i] = (tname, k)

    m = cp_model.CpModel()
    x = {}  # (session, worker) -> var
    workers = []  # (template, pool index)
    obj = []
    on_vars = {}
    for t in kept:
        fit = [i for i, s in enumerate(sessions) if fits(t, s)]
        if not fit:
            continue
        rank = {i: r for r, i in enumerate(fit)}
        base = len(pools_hint[t["name"]])
        size = min(len(fit), base + max(2, math.ceil(base * 0.1)))
        price = round(t["price"] * PRICE_SCALE)
        # Distinct start times and the sessions running then (capacity cliques).
        starts = sorted({sessions[i]["a"] for i in fit})
        cliques = []
        for a in starts:
            c = frozenset(i for i in fit if sessions[i]["a"] <= a < sessions[i]["b"])
            cliques.append(c)
        cliques = [c for c in set(cliques) if not any(c < d for d in cliques)]
        # Billing segments from the points start − keep and end.
        keep, lead = t["keep"], t["lead"]
        pts = sorted({sessions[i]["a"] - keep for i in fit} | {sessions[i]["b"] for i in fit})
        segs = list(zip(pts, pts[1:]))
        cover = [
            [i for i in fit if sessions[i]["a"] - keep <= p and q <= sessions[i]["b"]]
            for p, q in segs
        ]
        for k in range(size):
            w = len(workers)
            workers.append((t, k))
            for i in fit:
                if rank[i] < k:  # symmetry: worker k's first session has rank ≥ k
                    continue
                x[i, w] = m.NewBoolVar(f"x{i}_{w}")
                if hint:
                    m.AddHint(x[i, w], hint_of.get(i) == (t["name"], k))
            for c in cliques:
                vs = [i for i in c if (i, w) in x]
                for d in range(5):
                    if sum(sessions[i]["need"][d] for i in vs) > t["cap"][d]:
                        m.Add(sum(sessions[i]["need"][d] * x[i, w] for i in vs) <= t["cap"][d])
            prev = None
            prev_h = False
            for j, ((p, q), cov) in enumerate(zip(segs, cover)):
                vs = [x[i, w] for i in cov if (i, w) in x]
                if not vs:
                    prev = None
                    prev_h = False
                    continue
                on = m.NewBoolVar(f"on{w}_{j}")
                on_vars[w, j] = on
                on_h = any(hint_of.get(i) == (t["name"], k) for i in cov if (i, w) in x)
                if hint:
                    m.AddHint(on, on_h)
                for v in vs:
                    m.AddImplication(v, on)
                m.AddBoolOr([on.Not()] + vs)
                obj.append(price * (q - p) * on)
                # A run starts here when on and the previous segment was off.
                st = m.NewBoolVar(f"st{w}_{j}")
                if hint:
                    m.AddHint(st, on_h and not prev_h)
                if prev is None:
                    m.Add(st == on)
                else:
                    m.Add(st <= on)
                    m.Add(st <= 1 - prev)
                    m.Add(st >= on - prev)
                obj.append(-price * (keep - lead) * st)
                prev = on
                prev_h = on_h
        # Aggregate cover (redundant, tightens the LP): the workers on in a segment hold the
        # demand running in it.
        for j, (p, q) in enumerate(segs):
            act = [i for i in fit if sessions[i]["a"] <= p and q <= sessions[i]["b"]]
            only = [i for i in act if sum(fits(o, sessions[i]) for o in kept) == 1]
            if not only:
                continue
            ws = [w for w, (tt, _) in enumerate(workers) if tt is t and (w, j) in on_vars]
            for d in range(4):
                need = sum(sessions[i]["need"][d] for i in only)
                if need > 0:
                    m.Add(sum(t["cap"][d] * on_vars[w, j] for w in ws) >= need)
    for i in range(len(sessions)):
        vs = [v for (ii, _), v in x.items() if ii == i]
        if not vs:
            raise SystemExit(f"{path}: session {sessions[i]['id']} fits no template")
        m.AddExactlyOne(vs)
    m.Minimize(sum(obj))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = threads
    solver.parameters.interleave_search = True
    solver.parameters.random_seed = 1
    if len(sessions) > 120:
        # Presolve of the largest days takes the whole minute on one thread; search from the
        # hint instead.
        solver.parameters.cp_model_presolve = False
    t0 = time.time()
    status = solver.Solve(m)
    took = time.time() - t0
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise SystemExit(f"{path}: solver status {solver.StatusName(status)}")
    to_usd = 1.0 / (PRICE_SCALE * 60.0)
    best = solver.ObjectiveValue() * to_usd
    bound = max(0.0, solver.BestObjectiveBound() * to_usd)  # no plan costs less than 0
    used = sum(
        1 for w in range(len(workers)) if any(solver.Value(v) for (i, ww), v in x.items() if ww == w)
    )
    return {
        "file": os.path.relpath(path, ROOT),
        "sessions": len(sessions),
        "ccm_cost_usd": round(plan["cost"]["cost_usd"], 4),
        "ccm_lower_bound_usd": round(plan["cost"]["lower_bound_usd"], 4),
        "ccm_workers": plan["cost"]["workers"],
        "solver_best_usd": round(best, 4),
        "solver_bound_usd": round(bound, 4),
        "solver_status": solver.StatusName(status),
        "solver_workers": used,
        "solver_seconds": round(took, 1),
        "solver_threads": threads,
        "solver_hint": "ccm plan" if hint else None,
        "templates_modelled": [t["name"] for t in kept],
    }


def main():
    ap = argparse.ArgumentParser(description="CP-SAT reference for ccm plan")
    ap.add_argument("days", nargs="*", help="scenario files (default: config/scenarios/reference/day-*.yaml)")
    ap.add_argument("--seconds", type=float, default=60.0, help="solver time per day")
    ap.add_argument("--threads", type=int, default=1, help="solver worker threads")
    ap.add_argument(
        "--results",
        default=os.path.join(DEFAULT_DIR, "results.json"),
        help="results file to write (entries of other days are kept)",
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-hint", action="store_true", help="do not start from ccm's plan")
    args = ap.parse_args()
    ccm = os.environ.get("CCM_BIN", os.path.join(ROOT, "target", "release", "ccm"))
    days = args.days or sorted(glob.glob(os.path.join(DEFAULT_DIR, "day-*.yaml")))
    results = {}
    if os.path.exists(args.results) and not args.no_write:
        with open(args.results) as f:
            results = {d["file"]: d for d in json.load(f)["days"]}
    print(f"{'day':<44}{'ccm':>10}{'ccm LB':>10}{'best':>10}{'bound':>10}{'ccm/best':>9}")
    for path in days:
        try:
            r = solve_day(os.path.abspath(path), ccm, args.seconds, args.threads, not args.no_hint)
        except SystemExit as e:
            print(f"{os.path.basename(path)}: {e}", file=sys.stderr, flush=True)
            continue
        results[r["file"]] = r
        print(
            f"{os.path.basename(r['file']):<44}{r['ccm_cost_usd']:>10.2f}{r['ccm_lower_bound_usd']:>10.2f}"
            f"{r['solver_best_usd']:>10.2f}{r['solver_bound_usd']:>10.2f}"
            f"{r['ccm_cost_usd'] / r['solver_best_usd']:>9.3f}",
            flush=True,
        )
        if not args.no_write:
            doc = {
                "about": "CP-SAT reference for ccm plan (tools/plan-reference/solve.py): per day the "
                "solver's best cost and proven bound (USD) in the given seconds and threads, and "
                "ccm's cost and lower bound when it was solved.",
                "ortools": __import__("ortools").__version__,
                "days": [results[k] for k in sorted(results)],
            }
            with open(args.results, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")


if __name__ == "__main__":
    sys.exit(main())

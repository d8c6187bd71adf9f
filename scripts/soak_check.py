#!/usr/bin/env python3
"""Checks a soak's outcome from etcd alone, with etcdctl (JSON output, values decoded).

Two readings of ccm's keys under a prefix:

* the **history**: every change since the soak's first revision, replayed with
  `etcdctl watch --rev` (the soak writes a sentinel key `<prefix>/soak-end` when it is done, so
  the replay knows where to stop). After every revision (one etcd transaction) it checks, for
  every worker touched: the sum of the loads of the sessions bound to it (holding capacity)
  fits its capacity in every dimension, no port is held by two sessions, and no session holds
  ports on two workers;
* the **final state** (`etcdctl get --prefix`): every booked id exists (none lost), is in an
  end state, was bound at most once per time it was queued (a state history that is a valid
  path, SCHEDULED entered once more than it was requeued at most), holds no capacity and no
  port, and every worker's stored allocation equals what its bound sessions need.

Usable on its own:

    soak_check.py --etcdctl etcdctl --endpoints URLS --prefix /ccm-soak-x \
        --booked booked.json --definitions definitions.json --from-revision N

`booked.json` is a list of session ids; `definitions.json` maps a definition id to its load
({"cpu_cores", "memory_gb", "storage_gb", "nodes"}). Prints the figures and each violation;
exits 1 when there is any.
"""
import argparse
import json
import subprocess
import sys
import time

from ccmtest import END_STATES, HOLDING, b64, etcdctl_json, get_prefix, put

DIMS = ("cpu_cores", "memory_gb", "storage_gb", "nodes")
SENTINEL = "soak-end"


def holds_capacity(s):
    """LabletSession::holds_capacity: EXPIRED holds only when it is still bound."""
    if s.get("state") == "EXPIRED":
        return s.get("worker_id") is not None
    return s.get("state") in HOLDING


def current_revision(etcdctl, endpoints):
    return int(etcdctl_json(etcdctl, endpoints, "get", "/", "--keys-only", "--limit", "1")[
        "header"]["revision"])


def put_sentinel(etcdctl, endpoints, prefix):
    put(etcdctl, endpoints, f"{prefix}/{SENTINEL}", str(time.time()))


class Violations:
    def __init__(self, limit=20):
        self.by_kind = {}
        self.examples = []
        self.limit = limit

    def add(self, kind, msg):
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len([e for e in self.examples if e[0] == kind]) < self.limit:
            self.examples.append((kind, msg))

    def count(self, kind):
        return self.by_kind.get(kind, 0)

    def __bool__(self):
        return bool(self.by_kind)


class Replay:
    """The live state under a prefix, revision by revision, with the per-instant checks."""

    def __init__(self, prefix, loads, v):
        self.sp = prefix + "/sessions/"
        self.wp = prefix + "/workers/"
        self.sentinel = f"{prefix}/{SENTINEL}"
        self.loads = loads
        self.v = v
        self.sessions = {}
        self.workers = {}
        self.bound = {}  # worker id -> session ids bound to it (holding capacity)
        self.revisions = 0
        self.peak = {}  # worker id -> peak load fraction (max over dimensions)
        self.undecodable = 0

    def _bind_index(self, sid, old, new):
        touched = set()
        for s, add in ((old, False), (new, True)):
            if s is None or not holds_capacity(s) or s.get("worker_id") is None:
                continue
            w = s["worker_id"]
            touched.add(w)
            if add:
                self.bound.setdefault(w, set()).add(sid)
            else:
                self.bound.get(w, set()).discard(sid)
        return touched

    def apply(self, key, value, deleted):
        """Applies one event; returns the workers whose invariants it may change."""
        if key.startswith(self.sp):
            sid = key[len(self.sp):]
            old = self.sessions.pop(sid, None)
            new = None
            if not deleted:
                try:
                    new = json.loads(value)
                except ValueError:
                    self.undecodable += 1
                if new is not None:
                    self.sessions[sid] = new
            return self._bind_index(sid, old, new)
        if key.startswith(self.wp):
            wid = key[len(self.wp):]
            if deleted:
                self.workers.pop(wid, None)
            else:
                try:
                    self.workers[wid] = json.loads(value)
                except ValueError:
                    self.undecodable += 1
            return {wid}
        return set()

    def check(self, rev, workers):
        self.revisions += 1
        for wid in workers:
            w = self.workers.get(wid)
            ids = sorted(self.bound.get(wid, ()))
            if w is None:
                if ids:
                    self.v.add("bound to a missing worker",
                               f"rev {rev}: sessions {ids[:5]} bound to {wid} with no record")
                continue
            total = dict.fromkeys(DIMS, 0)
            for sid in ids:
                load = self.loads.get(self.sessions[sid].get("definition_id"))
                if load is None:
                    self.v.add("unknown definition",
                               f"rev {rev}: {sid} of {self.sessions[sid].get('definition_id')}")
                    continue
                for d in DIMS:
                    total[d] += load[d]
            cap = w.get("capacity", {})
            over = [d for d in DIMS if total[d] > cap.get(d, 0)]
            if over:
                self.v.add("over-commit",
                           f"rev {rev}: worker {wid} holds {total} > capacity {cap} ({over})")
            frac = max((total[d] / cap[d]) for d in DIMS if cap.get(d))
            self.peak[wid] = max(self.peak.get(wid, 0.0), frac)
            alloc = w.get("allocated", {})
            if any(alloc.get(d, 0) > cap.get(d, 0) for d in DIMS):
                self.v.add("over-commit",
                           f"rev {rev}: worker {wid} stored allocation {alloc} > capacity {cap}")
            # Ports: those the sessions hold, and the worker's own book.
            seen = {}
            for sid in ids:
                for name, p in self.sessions[sid].get("allocated_ports", {}).items():
                    if p in seen:
                        self.v.add("port with two owners",
                                   f"rev {rev}: port {p} on {wid}: {seen[p]} and {sid}/{name}")
                    seen[p] = f"{sid}/{name}"
            book = {}
            for sid, m in (w.get("ports", {}).get("owners") or {}).items():
                for name, p in m.items():
                    if p in book:
                        self.v.add("port with two owners",
                                   f"rev {rev}: worker {wid} books port {p} for {book[p]} and {sid}")
                    book[p] = sid
        # A session with ports on two workers (checked over the touched workers' books).
        owners = {}
        for wid in workers:
            w = self.workers.get(wid)
            if w is None:
                continue
            for sid in (w.get("ports", {}).get("owners") or {}):
                owners.setdefault(sid, set()).add(wid)
        for sid in owners:
            on = {wid for wid, w in self.workers.items()
                  if sid in (w.get("ports", {}).get("owners") or {})}
            if len(on) > 1:
                self.v.add("double-bound",
                           f"rev {rev}: session {sid} holds ports on {sorted(on)}")


def replay_history(etcdctl, endpoints, prefix, from_rev, loads, v, timeout=600):
    """Replays every change under `prefix` from `from_rev` up to the sentinel key."""
    r = Replay(prefix, loads, v)
    proc = subprocess.Popen(
        [etcdctl, "--endpoints", endpoints, "watch", "--prefix", prefix + "/",
         "--rev", str(from_rev), "-w", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + timeout
    pending_rev, touched, done = None, set(), False
    try:
        for line in proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            resp = json.loads(line)
            if resp.get("CompactRevision"):
                v.add("history compacted",
                      f"etcd compacted to {resp['CompactRevision']} > {from_rev}: cannot replay")
                return r
            for ev in resp.get("Events") or []:
                kv = ev["kv"]
                key = b64(kv["key"]).decode()
                rev = int(kv["mod_revision"])
                if pending_rev is not None and rev != pending_rev:
                    r.check(pending_rev, touched)
                    touched = set()
                pending_rev = rev
                if key == r.sentinel:
                    done = True
                    break
                touched |= r.apply(key, b64(kv.get("value")), ev.get("type") == 1)
            if done or time.time() > deadline:
                break
        if pending_rev is not None and touched:
            r.check(pending_rev, touched)
        if not done:
            v.add("replay incomplete", f"no sentinel {r.sentinel} seen: {proc.stderr.read()[:300]}"
                  if proc.poll() is not None else "replay timed out")
    finally:
        proc.kill()
        proc.wait()
    return r


def check_final(stored, prefix, booked, loads, v):
    """Final-state checks; returns {state: count} of the booked sessions."""
    sp, wp = prefix + "/sessions/", prefix + "/workers/"
    sessions, workers = {}, {}
    for k, val in stored.items():
        if k.startswith(sp):
            sid = k[len(sp):]
            try:
                s = json.loads(val)
            except ValueError:
                v.add("undecodable record", f"{k}")
                continue
            if s.get("id") != sid:
                v.add("key/id mismatch", f"{k} holds id {s.get('id')}")
            sessions[sid] = s
        elif k.startswith(wp):
            workers[k[len(wp):]] = json.loads(val)
    states = {}
    for sid in booked:
        s = sessions.get(sid)
        if s is None:
            v.add("session lost", f"booked {sid} is not in etcd")
            continue
        states[s["state"]] = states.get(s["state"], 0) + 1
        if s["state"] not in END_STATES:
            v.add("not ended", f"{sid} is {s['state']}")
        if holds_capacity(s) or s.get("allocated_ports"):
            v.add("ended but holding", f"{sid} ({s['state']}) holds {s.get('allocated_ports')} "
                                        f"on {s.get('worker_id')}")
        hist = s.get("state_history", [])
        prev = "PENDING"
        for c in hist:
            if c["from"] != prev:
                v.add("broken history", f"{sid}: {c['from']} after {prev}")
            prev = c["to"]
        if hist and prev != s["state"]:
            v.add("broken history", f"{sid}: history ends at {prev}, state {s['state']}")
        binds = sum(1 for c in hist if c["to"] == "SCHEDULED")
        requeues = sum(1 for c in hist if c["from"] in HOLDING and c["to"] == "PENDING")
        if binds > requeues + 1:
            v.add("double-bound", f"{sid}: bound {binds} times, requeued {requeues}")
    extra = set(sessions) - set(booked)
    if extra:
        v.add("unbooked session", f"{len(extra)} sessions nobody booked: {sorted(extra)[:5]}")
    for wid, w in workers.items():
        need = dict.fromkeys(DIMS, 0)
        for s in sessions.values():
            if holds_capacity(s) and s.get("worker_id") == wid:
                for d in DIMS:
                    need[d] += loads.get(s.get("definition_id"), dict.fromkeys(DIMS, 0))[d]
        alloc = {d: w.get("allocated", {}).get(d, 0) for d in DIMS}
        if alloc != need:
            v.add("allocation drift", f"worker {wid} stores {alloc}, its sessions need {need}")
        owners = w.get("ports", {}).get("owners") or {}
        for sid in owners:
            s = sessions.get(sid)
            if s is None or not holds_capacity(s) or s.get("worker_id") != wid:
                v.add("leaked ports", f"worker {wid} books ports for {sid} "
                                      f"({s and s['state']})")
    return states, sessions, workers


def run(etcdctl, endpoints, prefix, booked, loads, from_rev, write_sentinel=True):
    """All checks; returns (violations, figures)."""
    v = Violations()
    if write_sentinel:
        put_sentinel(etcdctl, endpoints, prefix)
    r = replay_history(etcdctl, endpoints, prefix, from_rev, loads, v)
    stored = get_prefix(etcdctl, endpoints, prefix + "/")
    states, sessions, workers = check_final(stored, prefix, booked, loads, v)
    figures = {
        "revisions_replayed": r.revisions,
        "sessions_in_etcd": len(sessions),
        "workers_in_etcd": len(workers),
        "end_states": states,
        "worker_states": count_by(workers.values(), "state"),
        "peak_worker_fill": round(max(r.peak.values(), default=0.0), 3),
        "sessions_ever_bound": sum(
            1 for s in sessions.values()
            if any(c["to"] == "SCHEDULED" for c in s.get("state_history", []))),
        "requeues": sum(
            1 for s in sessions.values() for c in s.get("state_history", [])
            if c["from"] in HOLDING and c["to"] == "PENDING"),
    }
    return v, figures


def count_by(items, field):
    out = {}
    for x in items:
        out[x.get(field)] = out.get(x.get(field), 0) + 1
    return out


def report(v, figures, out=sys.stdout):
    print("[soak-check] figures: " + json.dumps(figures, sort_keys=True), file=out, flush=True)
    kinds = ("over-commit", "port with two owners", "session lost", "double-bound", "not ended")
    print("[soak-check] " + ", ".join(f"{k}: {v.count(k)}" for k in kinds), file=out, flush=True)
    for kind, msg in v.examples:
        print(f"[soak-check] VIOLATION {kind}: {msg}", file=out, flush=True)
    others = {k: n for k, n in v.by_kind.items() if k not in kinds}
    if others:
        print(f"[soak-check] other violations: {others}", file=out, flush=True)
    print("[soak-check] " + ("FAILED" if v else "ok"), file=out, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etcdctl", default="etcdctl")
    ap.add_argument("--endpoints", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--booked", required=True, help="JSON list of booked session ids")
    ap.add_argument("--definitions", required=True, help="JSON {definition id: load}")
    ap.add_argument("--from-revision", type=int, default=1)
    ap.add_argument("--no-sentinel", action="store_true",
                    help="the sentinel key is already written")
    a = ap.parse_args()
    with open(a.booked, encoding="utf-8") as f:
        booked = json.load(f)
    with open(a.definitions, encoding="utf-8") as f:
        loads = json.load(f)
    v, figures = run(a.etcdctl, a.endpoints, a.prefix.rstrip("/"), booked, loads,
                     a.from_revision, not a.no_sentinel)
    report(v, figures)
    sys.exit(1 if v else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The soak checker finds what it must: records written with etcdctl under a fresh prefix (a
clean history, then one with an over-commit, a port with two owners, a lost, a double-bound and
an unended session) are checked by scripts/soak_check.py. Run by scripts/soak.sh before each
soak; needs an etcd (SOAK_CHECK_ETCD, default CCM_TEST_ETCD) and etcdctl. Exits 1 on a miss."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccmtest  # noqa: E402
import soak_check  # noqa: E402

ETCDCTL = os.environ.get("SOAK_ETCDCTL", "etcdctl")
ETCD = os.environ.get("SOAK_CHECK_ETCD") or os.environ.get("CCM_TEST_ETCD",
                                                           "http://127.0.0.1:23790")
LOAD = {"cpu_cores": 24, "memory_gb": 64, "storage_gb": 40, "nodes": 4}
CAP = {"cpu_cores": 48, "memory_gb": 192, "storage_gb": 500, "nodes": 20}


def put(key, value):
    ccmtest.put(ETCDCTL, ETCD, key, json.dumps(value), timeout=30)


def session(sid, state, worker=None, ports=None, history=None):
    return {"id": sid, "definition_id": "d", "state": state, "worker_id": worker,
            "allocated_ports": ports or {}, "state_history": history or [],
            "owner_id": "o", "definition_version": "1.0.0",
            "created_at": "2026-12-03T00:00:00Z", "updated_at": "2026-12-03T00:00:00Z"}


def worker(wid, owners, allocated=None):
    return {"id": wid, "state": "RUNNING", "capacity": CAP,
            "allocated": allocated or dict.fromkeys(CAP, 0),
            "ports": {"range": {"start": 2000, "end": 2100}, "owners": owners}}


def h(*states):
    out, prev = [], "PENDING"
    for s in states:
        out.append({"from": prev, "to": s, "at": "2026-12-03T00:00:00Z"})
        prev = s
    return out


def main():
    failures = []
    run = f"/ccm-soak-selftest-{int(time.time() * 1000)}"
    loads = {"d": LOAD}

    # A clean run: bound, then cancelled, ports released.
    clean = run + "-clean"
    rev = soak_check.current_revision(ETCDCTL, ETCD) + 1
    put(f"{clean}/workers/w1", worker("w1", {}))
    put(f"{clean}/sessions/a", session("a", "SCHEDULED", "w1", {"ssh": 2000}, h("SCHEDULED")))
    put(f"{clean}/workers/w1", worker("w1", {"a": {"ssh": 2000}}, LOAD))
    put(f"{clean}/sessions/a", session("a", "TERMINATED", "w1", {}, h("SCHEDULED", "TERMINATED")))
    put(f"{clean}/workers/w1", worker("w1", {}))
    v, fig = soak_check.run(ETCDCTL, ETCD, clean, ["a"], loads, rev)
    if v:
        failures.append(f"clean history reported {v.by_kind}: {v.examples}")
    if fig["revisions_replayed"] != 5:
        failures.append(f"clean history: {fig['revisions_replayed']} revisions replayed, not 5")

    # Every kind of fault, one after the other; all sessions end cancelled except `d`.
    bad = run + "-bad"
    rev = soak_check.current_revision(ETCDCTL, ETCD) + 1
    put(f"{bad}/workers/w1", worker("w1", {}))
    put(f"{bad}/workers/w2", worker("w2", {}))
    # Three sessions of 24 cores on a 48-core worker: an over-commit at that instant only.
    for sid in ("a", "b", "c"):
        put(f"{bad}/sessions/{sid}",
            session(sid, "SCHEDULED", "w1", {"ssh": 2000 + ord(sid)}, h("SCHEDULED")))
    put(f"{bad}/sessions/c", session("c", "TERMINATED", "w1", {}, h("SCHEDULED", "TERMINATED")))
    # `a` and `b` share a port on w1 for a moment.
    put(f"{bad}/sessions/b", session("b", "SCHEDULED", "w1", {"ssh": 2097}, h("SCHEDULED")))
    # `a` holds ports in both workers' books.
    put(f"{bad}/workers/w1", worker("w1", {"a": {"ssh": 2097}, "b": {"ssh": 2098}}))
    put(f"{bad}/workers/w2", worker("w2", {"a": {"ssh": 2000}}))
    put(f"{bad}/sessions/b", session("b", "SCHEDULED", "w1", {"ssh": 2098}, h("SCHEDULED")))
    put(f"{bad}/sessions/a", session("a", "TERMINATED", "w1", {},
                                     h("SCHEDULED", "INSTANTIATING", "READY", "RUNNING",
                                       "TERMINATED")))
    put(f"{bad}/sessions/b", session("b", "TERMINATED", "w1", {}, h("SCHEDULED", "TERMINATED")))
    put(f"{bad}/workers/w1", worker("w1", {}))
    put(f"{bad}/workers/w2", worker("w2", {}))
    # `d` bound twice without a requeue and still SCHEDULED; `e` booked but never stored.
    put(f"{bad}/sessions/d", session("d", "SCHEDULED", "w2", {"ssh": 2001},
                                     h("SCHEDULED") + [{"from": "SCHEDULED", "to": "SCHEDULED",
                                                        "at": "2026-12-03T00:00:01Z"}]))
    put(f"{bad}/workers/w2", worker("w2", {"d": {"ssh": 2001}}, LOAD))
    v, fig = soak_check.run(ETCDCTL, ETCD, bad, ["a", "b", "c", "d", "e"], loads, rev)
    for kind in ("over-commit", "port with two owners", "double-bound", "session lost",
                 "not ended"):
        if not v.count(kind):
            failures.append(f"missed {kind}: found {v.by_kind}")
    for kind, msg in v.examples:
        print(f"[test_soak_check] found {kind}: {msg}")
    subprocess.run([ETCDCTL, "--endpoints", ETCD, "del", "--prefix", run], capture_output=True,
                   timeout=30)
    for f in failures:
        print(f"[test_soak_check] FAILED: {f}")
    print("[test_soak_check] " + ("FAILED" if failures else "ok"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

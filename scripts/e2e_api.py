#!/usr/bin/env python3
"""End-to-end check of ccm's REST API with an ordinary HTTP client (requests), then of what ccm
wrote, read back with independent clients: etcdctl (sessions, workers), pymongo (definitions)
and boto3 (the lab YAML artifact).

Run by the Rust test `ccm-bin/tests/api_e2e.rs` against a `ccm serve` on etcd + SecantusDB +
moto. Every argument comes from the environment:

    CCM_URL, CCM_API_TOKEN                 the daemon and its token
    E2E_LAB                                a CML lab YAML file with ${PORT_*} placeholders
    E2E_ETCDCTL, E2E_ETCD, E2E_PREFIX      etcdctl binary, endpoint and ccm's key prefix
    E2E_MONGODB_URI, E2E_MONGODB_DATABASE  the spec store
    E2E_S3_ENDPOINT, E2E_S3_BUCKET         the artifact store (access keys: AWS_* env)

Prints one line per step and exits non-zero on the first failed check.
"""
import hashlib
import json
import os
import re
import sys
import time
import uuid

import boto3
import pymongo
import requests
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccmtest  # noqa: E402
from ccmtest import HOLDING  # noqa: E402

BASE = os.environ["CCM_URL"].rstrip("/") + "/api/v1"
TOKEN = os.environ["CCM_API_TOKEN"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUN = uuid.uuid4().hex[:8]


def step(msg):
    print(f"[e2e] {msg}", flush=True)


def check(cond, msg):
    if not cond:
        print(f"[e2e] FAILED: {msg}", flush=True)
        sys.exit(1)


def call(method, path, expect, body=None, auth=True, raw=False):
    r = requests.request(
        method,
        BASE + path,
        json=body,
        headers=AUTH if auth else {},
        timeout=30,
    )
    check(
        r.status_code == expect,
        f"{method} {path}: expected {expect}, got {r.status_code}: {r.text[:500]}",
    )
    if raw:
        return r
    check(
        r.headers.get("content-type", "").startswith("application/json"),
        f"{method} {path}: content type {r.headers.get('content-type')}",
    )
    return r.json()


def etcd_values(prefix):
    """Every value under `prefix` in etcd, read with etcdctl, as JSON."""
    stored = ccmtest.get_prefix(os.environ["E2E_ETCDCTL"], os.environ["E2E_ETCD"], prefix,
                                timeout=30)
    return {k: json.loads(v) for k, v in stored.items()}


def main():
    lab_text = open(os.environ["E2E_LAB"], encoding="utf-8").read()
    placeholders = sorted(set(re.findall(r"\$\{(PORT_[A-Z0-9_]+)\}", lab_text)))
    check(placeholders, "the lab has port placeholders")

    doc = call("get", "/openapi.json", 200, auth=False)
    check(doc.get("openapi", "").startswith("3."), "an OpenAPI 3 document")
    check("/api/v1/sessions" in doc["paths"], "the document lists /api/v1/sessions")
    step("openapi document served")

    name = f"e2e-ccna-{RUN}"
    draft = {
        "name": name,
        "version": "1.0.0",
        "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 20},
        "max_duration_minutes": 60,
        "lab_yaml": lab_text,
    }
    err = call("post", "/definitions", 401, body=draft, auth=False)
    check(err["error"]["code"] == "unauthorized", f"401 names its code: {err}")
    bad = dict(draft, resource_requirements={"cpu_cores": "four"})
    err = call("post", "/definitions", 422, body=bad)
    check("resource_requirements" in err["error"].get("field", ""), f"422 names the field: {err}")
    reg = call("post", "/definitions", 201, body=draft)
    d = reg["definition"]
    def_id = d["id"]
    check(d["name"] == name and d["version"] == "1.0.0", f"definition echoed: {d}")
    names = sorted(p["name"] for p in d["port_template"])
    as_placeholder = {"PORT_" + n.upper().replace("-", "_"): n for n in names}
    check(set(placeholders) <= set(as_placeholder),
          f"every placeholder {placeholders} has a port in the template {names}")
    again = call("post", "/definitions", 200, body=draft)
    check(again["outcome"].lower() == "unchanged", f"re-registering: {again['outcome']}")
    listed = call("get", "/definitions", 200)
    check(any(x["id"] == def_id for x in listed["items"]), "listed")
    call("get", f"/definitions/{def_id}", 200)
    versions = call("get", f"/definitions/{def_id}/versions", 200)
    check(len(versions["items"]) >= 1, f"versions: {versions}")
    call("get", "/definitions/no-such-definition", 404)
    step(f"definition {def_id} registered ({len(names)} ports)")

    # Three ASAP bookings; one retried with its idempotency key.
    ids = []
    for i in range(3):
        body = {
            "definition_id": def_id,
            "owner_id": f"student-{i}",
            "idempotency_key": f"{RUN}-{i}",
        }
        out = call("post", "/sessions", 201, body=body)
        check(out["created"] and out["session"]["state"] == "PENDING", f"booked: {out}")
        check(out["admission"]["decision"] == "accepted", f"admission: {out['admission']}")
        ids.append(out["session"]["id"])
    retry = call("post", "/sessions", 200, body={
        "definition_id": def_id, "owner_id": "student-0", "idempotency_key": f"{RUN}-0"})
    check(retry["session"]["id"] == ids[0] and not retry["created"], "idempotent retry")
    dry = call("post", "/sessions", 200, body={
        "definition_id": def_id, "owner_id": "student-9", "dry_run": True})
    check(dry["dry_run"] and dry["session"] is None, f"dry run writes nothing: {dry}")
    page = call("get", f"/sessions?definition={def_id}", 200)
    check(page["total"] == 3, f"three sessions stored, got {page['total']}")
    step(f"booked {ids}")

    # A slot that starts before any new worker can be ready is refused with its constraint.
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3660))
    rej = requests.post(BASE + "/sessions", headers=AUTH, timeout=30, json={
        "definition_id": def_id, "owner_id": "late", "timeslot_start": soon,
        "timeslot_end": later})
    if rej.status_code != 201:
        check(rej.status_code == 409, f"refusal status {rej.status_code}: {rej.text[:300]}")
        r = rej.json()["error"]
        check(r.get("refusal", {}).get("constraint"), f"refusal names a constraint: {r}")
        check(r["refusal"].get("earliest_start"), f"refusal names the earliest slot: {r}")
        step(f"refused: {r['refusal']['constraint']}, earliest {r['refusal']['earliest_start']}")
    else:
        # A worker was already up with room (the daemon launched one quickly): accepted.
        ids.append(rej.json()["session"]["id"])
        step("the soon slot fitted on a worker already up")

    # The controller launches a worker (one-minute boot) and the scheduler binds them.
    deadline = time.time() + 180
    sessions = {}
    while time.time() < deadline:
        sessions = {i: call("get", f"/sessions/{i}", 200) for i in ids[:3]}
        if all(s["state"] in HOLDING for s in sessions.values()):
            break
        time.sleep(1)
    check(all(s["state"] in HOLDING for s in sessions.values()),
          f"bound in time: {[(i, s['state']) for i, s in sessions.items()]}")
    step("all bound: " + ", ".join(f"{i}@{s['worker_id']}" for i, s in sessions.items()))

    # The lab YAML with the session's own ports filled in, format preserved.
    s0 = sessions[ids[0]]
    r = call("get", f"/sessions/{ids[0]}/lab.yaml", 200, raw=True)
    check(r.headers["content-type"].startswith("application/yaml"), "yaml content type")
    text = r.text
    lab = yaml.safe_load(text)
    check(lab is not None, "the rewritten lab parses")
    check(len(text.splitlines()) == len(lab_text.splitlines()), "line count preserved")
    check(sorted(s0["allocated_ports"]) == names, f"one port per template entry: {s0['allocated_ports']}")
    tags = [str(t) for n in lab.get("nodes", []) for t in (n.get("tags") or [])]
    tags += [str(a.get("tag", "")) for a in lab.get("smart_annotations", []) or []]
    check(not any("${PORT_" in t for t in tags), f"every tag placeholder filled: {tags}")
    for ph in placeholders:
        port = s0["allocated_ports"][as_placeholder[ph]]
        check(any(t.endswith(str(port)) for t in tags), f"port {ph}={port} in a tag: {tags}")
    # Only the tags changed: the rest (notes, configurations) is byte for byte the original.
    original = yaml.safe_load(lab_text)
    for n_new, n_old in zip(lab["nodes"], original["nodes"]):
        check({k: v for k, v in n_new.items() if k != "tags"}
              == {k: v for k, v in n_old.items() if k != "tags"}, f"node {n_old.get('id')} unchanged")

    # Workers: allocation and ports per session, no port with two owners.
    workers = call("get", "/workers", 200)["items"]
    seen = {}
    for w in workers:
        for sid, ports in w["ports"]["by_session"].items():
            for p in ports.values():
                check((w["id"], p) not in seen, f"port {p} on {w['id']} twice")
                seen[(w["id"], p)] = sid
    w0 = next(w for w in workers if w["id"] == s0["worker_id"])
    check(ids[0] in w0["sessions"], f"{ids[0]} on {w0['id']}: {w0['sessions']}")
    call("get", f"/workers/{w0['id']}", 200)
    explain = call("get", f"/sessions/{ids[0]}/explain", 200)
    check(explain["state"] in HOLDING, f"explain: {explain}")
    step(f"worker {w0['id']} holds {len(w0['sessions'])} sessions, {len(seen)} ports")

    # Cancel one: its capacity and ports go back to the worker.
    free_before = w0["ports"]["free"]
    out = call("post", f"/sessions/{ids[1]}/cancel", 200, body={"reason": "e2e cancel"})
    check(out["state"] in ("TERMINATED", "STOPPING", "STOPPED"), f"cancelled: {out['state']}")
    w1 = call("get", f"/workers/{sessions[ids[1]]['worker_id']}", 200)
    check(ids[1] not in w1["sessions"], "the cancelled session left its worker")
    if w1["id"] == w0["id"]:
        check(w1["ports"]["free"] == free_before + len(names),
              f"ports freed: {free_before} -> {w1['ports']['free']}")
    call("post", "/sessions/no-such-session/cancel", 404, body={})
    step(f"cancelled {ids[1]}")

    # What etcd holds, read with etcdctl.
    prefix = os.environ["E2E_PREFIX"].rstrip("/")
    stored = etcd_values(prefix + "/sessions/")
    by_id = {v["id"]: v for v in stored.values()}
    for i in ids[:3]:
        check(i in by_id, f"{i} in etcd")
    check(by_id[ids[1]]["state"] == out["state"], f"etcd state of the cancelled one: {by_id[ids[1]]['state']}")
    check(by_id[ids[1]]["allocated_ports"] == {} or by_id[ids[1]]["state"] not in HOLDING,
          "the cancelled session holds no ports")
    check(by_id[ids[0]]["allocated_ports"] == s0["allocated_ports"], "etcd ports = API ports")
    wstored = {v["id"]: v for v in etcd_values(prefix + "/workers/").values()}
    check(s0["worker_id"] in wstored, "the worker record is in etcd")
    step(f"etcdctl: {len(stored)} sessions, {len(wstored)} workers")

    # The definition in MongoDB, read with pymongo.
    db = pymongo.MongoClient(os.environ["E2E_MONGODB_URI"], serverSelectionTimeoutMS=5000)[
        os.environ["E2E_MONGODB_DATABASE"]]
    docs = list(db["lablet_definitions"].find({"name": name}))
    check(len(docs) == 1, f"one definition document, got {len(docs)}")
    check(docs[0]["lab_yaml_hash"] == d["lab_yaml_hash"], "same hash in MongoDB")
    step("pymongo: definition stored once")

    # The lab YAML artifact in S3, read with boto3.
    uri = d["lab_artifact_uri"]
    # The artifact store's key, in the configured bucket.
    bucket = os.environ["E2E_S3_BUCKET"]
    check(re.fullmatch(r"definitions/[a-z0-9-]+/1\.0\.0/cml\.yaml", uri) is not None,
          f"artifact key {uri}")
    s3 = boto3.client("s3", endpoint_url=os.environ["E2E_S3_ENDPOINT"], region_name="us-east-1")
    body = s3.get_object(Bucket=bucket, Key=uri)["Body"].read()
    check(body == lab_text.encode(), "the stored lab is the uploaded one")
    check(hashlib.sha256(body).hexdigest() == d["lab_yaml_hash"].removeprefix("sha256:"),
          "sha256 matches")
    step(f"boto3: s3://{bucket}/{uri} ({len(body)} bytes)")
    print("[e2e] ok", flush=True)


if __name__ == "__main__":
    main()

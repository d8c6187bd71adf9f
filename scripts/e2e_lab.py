#!/usr/bin/env python3
"""End to end: `ccm serve` on etcd, with the EC2 provider on moto and the CML adapter against
the CML test server, two daemons, leaders SIGKILLed at the worst moments.

Run by the Rust test `ccm-bin/tests/serve_lab_e2e.rs`. It starts its own CML test server
(`scripts/cml_server.py`, slow imports so a kill lands inside one) and its own `ccm serve`
processes, and checks with independent clients: boto3 (instances by the fleet's tag), the CML
test server's call counters, and the REST API.

1. Daemon A leads every loop, daemon B stands by. One ASAP session is booked; the moment boto3
   sees the launched instance, A is SIGKILLed. B must adopt that instance (its record names
   it) and launch nothing more.
2. The session is bound and its lab import is under way on CML when B is SIGKILLed. A fresh
   daemon must find the lab by its title once the import lands, never import it twice, and
   run the session through READY → RUNNING → STOPPING → STOPPED → ARCHIVED (its definition
   lets it run one minute). The CML server is asked for exactly one import, one start, one
   stop and one wipe of that lab.
3. A second session is booked into a later slot and bound; its worker's instance is
   terminated behind ccm's back (boto3). ccm must see it, requeue the session (PENDING again)
   and serve it on another instance.

Environment: E2E_CCM_BIN, E2E_ROOT, E2E_ETCD, E2E_PREFIX, E2E_MONGODB_URI, E2E_S3_ENDPOINT,
E2E_EC2_ENDPOINT, E2E_LAB, E2E_ETCDCTL. Prints one line per step; exits non-zero on the first failed check.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import boto3
import requests

ROOT = os.environ["E2E_ROOT"]
RUN = uuid.uuid4().hex[:10]
TOKEN = "e2e-lab-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLEET = f"ccm-e2e-{RUN}"
REGIONS = ["us-east-1", "us-west-2"]
IMPORT_SECONDS = 8
PROCS = []
T0 = time.time()


def step(msg):
    print(f"[e2e-lab {time.time() - T0:6.1f}s] {msg}", flush=True)


def fail(msg):
    print(f"[e2e-lab] FAILED: {msg}", flush=True)
    for name, p, log in PROCS:
        if log and os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-4000:]
            print(f"--- last log of {name} ---\n{tail}", flush=True)
    cleanup()
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def cleanup():
    for _, p, _ in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    try:
        for region in REGIONS:
            ids = [i["InstanceId"] for i in instances(region) if i["State"]["Name"] != "terminated"]
            if ids:
                ec2(region).terminate_instances(InstanceIds=ids)
    except Exception as e:  # cleanup only
        print(f"[e2e-lab] cleanup: {e}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ec2(region):
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=os.environ["E2E_EC2_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def instances(region):
    out = []
    pages = ec2(region).get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:ManagedBy", "Values": [FLEET]}]
    )
    for page in pages:
        for r in page["Reservations"]:
            out.extend(r["Instances"])
    return out


def all_instances():
    return [i for r in REGIONS for i in instances(r)]


def wait_for(what, cond, seconds, every=0.5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    fail(f"timed out after {seconds} s waiting for {what}")


def wait_for_or(what, cond, seconds, show):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(1)
    fail(f"timed out after {seconds} s waiting for {what}; last seen: {show()}")


class Daemon:
    def __init__(self, name, env, tmp):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(tmp, f"{name}.log")
        full = dict(env, CCM_CANDIDATE_ID=name, CCM_HTTP_ADDR=f"127.0.0.1:{self.port}")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [os.environ["E2E_CCM_BIN"], "--env-file", "/nonexistent/ccm.env", "serve"],
                cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT,
            )
        PROCS.append((name, self.proc, self.log))
        wait_for(f"{name} to answer /healthz", self.healthy, 60)

    def healthy(self):
        try:
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def leads(self):
        try:
            loops = requests.get(self.base + "/readyz", timeout=2).json().get("loops", {})
        except (requests.RequestException, ValueError):
            return set()
        return {name for name, l in loops.items() if l.get("is_leader")}

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def api(d, method, path, expect, body=None):
    r = requests.request(method, d.base + "/api/v1" + path, json=body, headers=AUTH, timeout=30)
    check(r.status_code == expect,
          f"{method} {path} on {d.name}: expected {expect}, got {r.status_code}: {r.text[:400]}")
    return r.json()


def session(d, sid):
    return api(d, "get", f"/sessions/{sid}", 200)


def states(s):
    h = s.get("state_history", [])
    return ([h[0]["from"]] if h else []) + [x["to"] for x in h] or [s["state"]]


def etcd_worker(worker_id):
    """The worker record as etcd holds it (etcdctl, not ccm)."""
    out = subprocess.run(
        [os.environ["E2E_ETCDCTL"], "--endpoints", os.environ["E2E_ETCD"], "get",
         f"{os.environ['E2E_PREFIX']}/workers/{worker_id}", "--print-value-only"],
        capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"etcdctl get: {out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else None


def main():
    tmp = tempfile.mkdtemp(prefix="ccm-e2e-lab-")
    # Our own CML test server: imports take IMPORT_SECONDS, so a leader can die inside one.
    cml_port = free_port()
    cml_log = os.path.join(tmp, "cml.log")
    with open(cml_log, "w") as log:
        cml = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "scripts/cml_server.py"), "--host", "127.0.0.1",
             "--port", str(cml_port), "--user", "admin:e2e-cml-secret",
             "--tls-dir", os.path.join(tmp, "tls"), "--import-seconds", str(IMPORT_SECONDS),
             "--boot-seconds", "3", "--stop-seconds", "1", "--wipe-seconds", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    PROCS.append(("cml", cml, cml_log))
    cml_url = f"https://127.0.0.1:{cml_port}"
    ca = os.path.join(tmp, "tls", "ca.pem")
    wait_for("the CML test server", lambda: os.path.exists(ca) and cml_up(cml_url, ca), 60)

    def cml_calls():
        ctx = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(cml_url + "/_test/calls", context=ctx, timeout=5) as r:
            return json.load(r)

    # The seed templates with a one-minute boot.
    seed = open(os.path.join(ROOT, "config/worker-templates.yaml"), encoding="utf-8").read()
    fast = seed.replace("    drain_timeout_hours:", "    startup_minutes: 1\n    drain_timeout_hours:")
    templates = os.path.join(tmp, "worker-templates.yaml")
    with open(templates, "w", encoding="utf-8") as f:
        f.write(fast)

    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "info,ccm_core=info",
        "CCM_BACKEND": "etcd",
        "CCM_ETCD_ENDPOINTS": os.environ["E2E_ETCD"],
        "CCM_ETCD_PREFIX": os.environ["E2E_PREFIX"],
        "CCM_API_TOKEN": TOKEN,
        "SCHEDULER_LEADER_LEASE_TTL_SECONDS": "3",
        "SCHEDULER_RECONCILE_INTERVAL_SECONDS": "1",
        "CONTROLLER_RECONCILE_INTERVAL_SECONDS": "1",
        "LABLET_RECONCILE_INTERVAL_SECONDS": "1",
        "LABLET_RETRY_BACKOFF_SECONDS": "2",
        "LABLET_INSTANTIATION_LEAD_MINUTES": "1",
        "WORKER_TEMPLATES_CONFIG_PATH": templates,
        "MONGODB_URI": os.environ["E2E_MONGODB_URI"],
        "MONGODB_DATABASE": f"ccm_e2e_lab_{RUN}",
        "ARTIFACT_STORAGE_ENDPOINT": os.environ["E2E_S3_ENDPOINT"],
        "ARTIFACT_STORAGE_ACCESS_KEY": "testing",
        "ARTIFACT_STORAGE_SECRET_KEY": "testing",
        "ARTIFACT_STORAGE_BUCKET": f"ccm-e2e-lab-{RUN}",
        "ARTIFACT_STORAGE_REGION": "us-east-1",
        "CCM_PROVIDER": "ec2",
        "CCM_EC2_ENDPOINT": os.environ["E2E_EC2_ENDPOINT"],
        "CCM_EC2_ACCESS_KEY_ID": "testing",
        "CCM_EC2_SECRET_ACCESS_KEY": "testing",
        "CCM_EC2_REGIONS": ",".join(REGIONS),
        "CCM_EC2_FLEET": FLEET,
        "CCM_LAB_RUNTIME": "cml",
        "CML_USERNAME": "admin",
        "CML_PASSWORD": "e2e-cml-secret",
        "CML_CA_FILE": ca,
        "CML_IMPORT_TIMEOUT_SECONDS": "30",
        "LABLET_CML_URL_TEMPLATE": cml_url,
    }

    a = Daemon("a", env, tmp)
    wait_for("a to lead every loop", lambda: a.leads() >= {"scheduler", "controller", "lab"}, 30)
    b = Daemon("b", env, tmp)
    step("daemon a leads scheduler, controller and lab loop; b stands by")

    lab_text = open(os.environ["E2E_LAB"], encoding="utf-8").read()
    reg = api(a, "post", "/definitions", 201, body={
        "name": f"e2e-lab-{RUN}", "version": "1.0.0",
        "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 20},
        "max_duration_minutes": 1, "lab_yaml": lab_text})
    def_id = reg["definition"]["id"]
    out = api(a, "post", "/sessions", 201, body={"definition_id": def_id, "owner_id": "student-1"})
    check(out["admission"]["decision"] == "accepted", f"admitted: {out['admission']}")
    s1 = out["session"]["id"]
    step(f"definition {def_id} registered, session {s1} booked (ASAP)")

    # 1. Kill the controller leader the moment its instance exists.
    launched = wait_for("the controller's launch", all_instances, 90, every=0.1)
    a.kill()
    check(len(launched) == 1, f"one instance launched: {[i['InstanceId'] for i in launched]}")
    first = launched[0]["InstanceId"]
    step(f"instance {first} launched; daemon a SIGKILLed")
    wait_for("b to lead the controller", lambda: "controller" in b.leads(), 30)
    a2 = Daemon("a2", env, tmp)
    bound = wait_for("the session bound", lambda: (lambda s: s if s.get("worker_id") else None)(
        session(b, s1)), 120)
    rec = etcd_worker(bound["worker_id"])
    check(rec and rec.get("provider_id") == first,
          f"the worker record in etcd names the instance: {rec} vs {first}")
    live = [i for i in all_instances() if i["State"]["Name"] != "terminated"]
    check([i["InstanceId"] for i in live] == [first],
          f"nothing launched twice after the failover: {[i['InstanceId'] for i in live]}")
    step(f"b adopted {first} as {bound['worker_id']}; one instance by tag {FLEET}")

    # 2. Kill the lab loop's leader inside the import.
    def importing():
        c = cml_calls()["calls"]
        return c.get("POST /import", 0) >= 1
    wait_for("the import to be sent", importing, 120, every=0.1)
    leader = b if "lab" in b.leads() else a2
    check("lab" in leader.leads(), "someone leads the lab loop")
    leader.kill()
    standby = a2 if leader is b else b
    step(f"import under way on CML; lab leader {leader.name} SIGKILLed, {standby.name} takes over")
    b2 = Daemon("b2", env, tmp)

    def ended():
        s = session(standby, s1)
        return s if s["state"] in ("STOPPED", "ARCHIVED", "EXPIRED", "TERMINATED") else None
    done = wait_for("the session to run and end", ended, 240, every=1)
    seen = states(done)
    for st in ("SCHEDULED", "INSTANTIATING", "READY", "RUNNING", "STOPPING"):
        check(st in seen, f"{s1} passed {st}: {seen}")
    check(done["state"] in ("STOPPED", "ARCHIVED"), f"{s1} ended normally: {seen}")
    c = cml_calls()
    check(c["calls"].get("POST /import", 0) == 1, f"exactly one import: {c['calls']}")
    check(len(c["labs"]) == 1, f"one lab on CML: {list(c['labs'])}")
    per_lab = next(iter(c["labs"].values()))
    for route in ("PUT /labs/{lab}/start", "PUT /labs/{lab}/stop", "PUT /labs/{lab}/wipe"):
        check(per_lab.get(route, 0) == 1, f"{route} once: {per_lab}")
    step(f"{s1}: {' → '.join(dict.fromkeys(seen))}; CML asked 1 import, 1 start, 1 stop, 1 wipe")

    # 3. An instance terminated behind ccm's back: its booked session requeues and is served.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 660))
    out = api(standby, "post", "/sessions", 201, body={
        "definition_id": def_id, "owner_id": "student-2", "timeslot_start": start,
        "timeslot_end": end})
    s2 = out["session"]["id"]
    last = {}

    def bound_s2():
        last["s2"] = session(standby, s2)
        return last["s2"] if last["s2"].get("worker_id") else None
    held = wait_for_or(f"s2 bound (admission {out['admission']})", bound_s2, 120,
                       lambda: last.get("s2"))
    check(held["state"] == "SCHEDULED", f"s2 waits for its slot: {held['state']}")
    lost_id = held["worker_id"]
    victim = etcd_worker(lost_id)["provider_id"]
    where = next(i for i in all_instances() if i["InstanceId"] == victim)
    ec2(where["Placement"]["AvailabilityZone"][:-1]).terminate_instances(InstanceIds=[victim])
    step(f"{s2} bound to {lost_id}; its instance {victim} terminated behind ccm's back")

    def moved():
        s = session(standby, s2)
        return s if s.get("worker_id") and s["worker_id"] != lost_id else None
    again = wait_for("s2 requeued and bound to another worker", moved, 180, every=1)
    check("PENDING" in states(again)[1:], f"s2 went back to PENDING: {states(again)}")
    lost = etcd_worker(lost_id)
    check(lost is None or lost.get("state") == "TERMINATED",
          f"the lost worker is TERMINATED in etcd: {lost}")
    new = etcd_worker(again["worker_id"])
    state = {i["InstanceId"]: i["State"]["Name"] for i in all_instances()}
    check(new and new.get("provider_id") in state and new["provider_id"] != victim
          and state[new["provider_id"]] != "terminated",
          f"the new worker names a live instance: {new} vs {state}")
    step(f"{s2} requeued and bound to {again['worker_id']} on {new['provider_id']}; "
         f"instances by tag: {state}")

    cleanup()
    print("[e2e-lab] ok", flush=True)


def cml_up(url, ca):
    try:
        ctx = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(url + "/api/v0/system_information", context=ctx, timeout=2):
            return True
    except Exception:
        return False


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # any crash still stops the servers
        fail(f"{type(e).__name__}: {e}")

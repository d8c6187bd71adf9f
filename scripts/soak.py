#!/usr/bin/env python3
"""Soak of `ccm serve` on a 3-member etcd cluster, under faults, checked from etcd.

Starts SOAK_DAEMONS (default 3) `ccm serve` daemons on one etcd prefix (workers from the EC2
provider on moto_server, definitions in SecantusDB, lab YAML in moto S3 — stores every daemon
shares), registers two definitions and books a steady stream of sessions through the REST API
(as soon as possible and in short slots, each retried with its idempotency key on another
daemon when an answer is lost). Every session is cancelled when its hold ends (ASAP: a while
after it is bound; slots: at the slot end), so every booked session must reach an end state.

Meanwhile it SIGKILLs the scheduler's leader every --kill-every seconds (found through /readyz
`is_leader`) and restarts it, and stops and restarts the etcd members one at a time. After
--duration seconds it stops the faults, waits for every booked session to end, and checks what
etcd holds with scripts/soak_check.py: 0 over-commits at any revision, 0 ports with two owners,
0 sessions lost or double-bound, every booked session in an end state.

Environment (scripts/soak.sh sets it): SOAK_BIN (the ccm binary), CCM_TEST_ETCD_CLUSTER,
CCM_TEST_SERVICES (scripts/services.sh that started the cluster: `member stop|start`),
CCM_TEST_MONGODB_URI, CCM_TEST_S3_ENDPOINT, CCM_TEST_EC2_ENDPOINT; SOAK_WORK (logs),
SOAK_ETCDCTL (default etcdctl).
"""
import argparse
import calendar
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak_check  # noqa: E402
from ccmtest import END_STATES as END, HOLDING  # noqa: E402

TOKEN = "soak-token-0123456789abcdef"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Figures:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.failover_seconds = []

    def inc(self, k, n=1):
        with self.lock:
            self.c[k] = self.c.get(k, 0) + n


class Daemon:
    def __init__(self, name, env, work):
        self.name = name
        self.port = free_port()
        self.env = dict(env, CCM_CANDIDATE_ID=name, CCM_HTTP_ADDR=f"127.0.0.1:{self.port}")
        self.log_path = os.path.join(work, f"{name}.log")
        self.proc = None
        self.starts = 0

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.starts += 1
        out = open(self.log_path, "a", encoding="utf-8")
        out.write(f"--- start {self.starts} at {iso(time.time())}\n")
        out.flush()
        self.proc = subprocess.Popen(
            [os.environ["SOAK_BIN"], "--env-file", "/nonexistent/ccm.env", "serve"],
            env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def readyz(self):
        try:
            r = requests.get(self.base + "/readyz", timeout=2)
            return r.json()
        except (requests.RequestException, ValueError):
            return None

    def leads(self):
        z = self.readyz()
        return bool(z and z.get("loops", {}).get("scheduler", {}).get("is_leader"))


class Cluster:
    """The etcd members, stopped and started through scripts/services.sh."""

    def __init__(self, services, urls):
        self.services = services
        self.urls = urls

    def member(self, action, name):
        subprocess.run(["bash", self.services, "member", action, name], check=True,
                       capture_output=True, timeout=120)

    def healthy(self):
        for u in self.urls.split(","):
            try:
                if requests.get(u + "/health", timeout=2).status_code != 200:
                    return False
            except requests.RequestException:
                return False
        return True


class OwnCluster:
    """A private 3-member etcd cluster (SOAK_OWN_CLUSTER=1: ports 2479x/2480x), so a soak on a
    shared machine stops no member another test uses."""

    def __init__(self, work):
        self.dir = os.path.join(work, "etcd")
        self.procs = {}
        self.urls = ",".join(f"http://127.0.0.1:2479{i}" for i in (1, 2, 3))
        self.peers = ",".join(f"m{i}=http://127.0.0.1:2480{i}" for i in (1, 2, 3))
        for i in (1, 2, 3):
            self.start_member(i, "new")
        deadline = time.time() + 60
        while not self.healthy():
            if time.time() > deadline:
                raise RuntimeError(f"the private etcd cluster did not start: see {self.dir}")
            time.sleep(0.3)

    def start_member(self, i, state):
        data = os.path.join(self.dir, f"m{i}")
        os.makedirs(data, exist_ok=True)
        out = open(os.path.join(self.dir, f"m{i}.log"), "a", encoding="utf-8")
        self.procs[i] = subprocess.Popen(
            ["etcd", "--name", f"m{i}", "--data-dir", data,
             "--listen-client-urls", f"http://127.0.0.1:2479{i}",
             "--advertise-client-urls", f"http://127.0.0.1:2479{i}",
             "--listen-peer-urls", f"http://127.0.0.1:2480{i}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:2480{i}",
             "--initial-cluster", self.peers, "--initial-cluster-state", state,
             "--initial-cluster-token", "ccm-soak", "--logger=zap"],
            stdout=out, stderr=subprocess.STDOUT,
        )

    def member(self, action, name):
        i = int(name[-1])
        if action in ("stop", "kill"):
            p = self.procs.get(i)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM if action == "stop" else signal.SIGKILL)
                p.wait(timeout=30)
        else:
            if self.procs.get(i) and self.procs[i].poll() is None:
                return
            self.start_member(i, "existing")
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if requests.get(f"http://127.0.0.1:2479{i}/health", timeout=1).ok:
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            raise RuntimeError(f"etcd m{i} did not come back")

    def healthy(self):
        return Cluster.healthy(self)

    def shutdown(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


class Soak:
    def __init__(self, a):
        self.a = a
        self.work = os.environ.get("SOAK_WORK") or f"/tmp/ccm-soak-{os.getpid()}"
        os.makedirs(self.work, exist_ok=True)
        self.etcdctl = os.environ.get("SOAK_ETCDCTL", "etcdctl")
        if os.environ.get("SOAK_OWN_CLUSTER") == "1":
            self.cluster = OwnCluster(self.work)
            self.endpoints = self.cluster.urls
        else:
            self.endpoints = os.environ["CCM_TEST_ETCD_CLUSTER"]
            self.cluster = Cluster(os.environ["CCM_TEST_SERVICES"], self.endpoints)
        run = f"{int(time.time())}-{os.getpid()}"
        self.prefix = f"/ccm-soak-{run}"
        self.fig = Figures()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rng = random.Random(a.seed)
        # session id -> {"kind", "cancel_at" (or None until bound), "slot_end", "key"}
        self.booked = {}
        self.keys = {}  # idempotency key -> session id
        self.loads = {}
        self.down = set()  # daemons being restarted
        templates = self.fast_templates()
        bucket = f"ccm-soak-{run}"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RUST_LOG": os.environ.get("SOAK_RUST_LOG", "warn,ccm_core=info"),
            "CCM_BACKEND": "etcd",
            "CCM_ETCD_ENDPOINTS": self.endpoints,
            "CCM_ETCD_PREFIX": self.prefix,
            "CCM_API_TOKEN": TOKEN,
            "SCHEDULER_LEADER_LEASE_TTL_SECONDS": str(a.ttl),
            "SCHEDULER_RECONCILE_INTERVAL_SECONDS": "1",
            "CONTROLLER_RECONCILE_INTERVAL_SECONDS": "2",
            "LABLET_INSTANTIATION_LEAD_MINUTES": "1",
            "WORKER_TEMPLATES_CONFIG_PATH": templates,
            "MONGODB_URI": os.environ["CCM_TEST_MONGODB_URI"],
            "MONGODB_DATABASE": f"ccm_soak_{run.replace('-', '_')}",
            "ARTIFACT_STORAGE_ENDPOINT": os.environ["CCM_TEST_S3_ENDPOINT"],
            "ARTIFACT_STORAGE_ACCESS_KEY": "testing",
            "ARTIFACT_STORAGE_SECRET_KEY": "testing",
            "ARTIFACT_STORAGE_BUCKET": bucket,
            "ARTIFACT_STORAGE_REGION": "us-east-1",
            "CCM_PROVIDER": "ec2",
            "CCM_EC2_ENDPOINT": os.environ["CCM_TEST_EC2_ENDPOINT"],
            "CCM_EC2_ACCESS_KEY_ID": "testing",
            "CCM_EC2_SECRET_ACCESS_KEY": "testing",
            "CCM_EC2_REGIONS": "us-east-1",
            # This soak's own fleet tag: instances of other runs on the shared moto are not its.
            "CCM_EC2_FLEET": f"ccm-soak-{run}",
            # No lab side: the soak ends each session itself (cancel) when its time is up.
            "CCM_LAB_RUNTIME": "none",
            # Instances of other runs on the shared moto are not this soak's.
            "CCM_EC2_ORPHAN_POLICY": "ignore",
        }
        self.daemons = [Daemon(f"soak-{i + 1}", env, self.work) for i in range(a.daemons)]

    def fast_templates(self):
        """The seed templates, one-minute boot, only in us-east-1 (the region watched)."""
        with open(os.path.join(ROOT, "config/worker-templates.yaml"), encoding="utf-8") as f:
            seed = f.read()
        fast = seed.replace("    drain_timeout_hours:",
                            "    startup_minutes: 1\n    drain_timeout_hours:")
        fast = fast.replace('      - "us-west-2"\n', "")
        # Names of this run only: worker ids (template-0001, ...) never meet the instances an
        # earlier run left on the shared moto (a worker takes the state of an instance tagged
        # with its id).
        tag = self.prefix.rsplit("-", 2)[-2][-6:]
        for name in ("personal-standard", "enterprise-large"):
            fast = fast.replace(f'name: "{name}"', f'name: "soak{tag}-{name}"')
        path = os.path.join(self.work, "worker-templates.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(fast)
        return path

    # --- HTTP with failover between daemons -------------------------------------------------

    def live(self):
        return [d for d in self.daemons if d.alive() and d.name not in self.down]

    def call(self, method, path, body=None, expect=(200, 201), tries=40):
        """One API call, moved to another daemon on a connection error or a 5xx."""
        last = None
        for i in range(tries):
            ds = self.live()
            if not ds:
                time.sleep(0.5)
                continue
            d = ds[i % len(ds)] if i else self.rng.choice(ds)
            try:
                r = requests.request(method, d.base + "/api/v1" + path, json=body, timeout=15,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
            except requests.RequestException as e:
                last = f"{d.name}: {e}"
                self.fig.inc("api_retries")
                time.sleep(0.3)
                continue
            if r.status_code >= 500 or r.status_code == 429:
                last = f"{d.name}: {r.status_code} {r.text[:200]}"
                self.fig.inc("api_retries")
                time.sleep(0.3)
                continue
            return r
        raise RuntimeError(f"{method} {path}: no daemon answered ({last})")

    # --- setup --------------------------------------------------------------------------------

    def register(self):
        with open(os.path.join(ROOT, "ccm-core/tests/data/labs/ccna-basic.yaml"),
                  encoding="utf-8") as f:
            lab = f.read()
        for name, cpu, mem in (("soak-small", 4, 16), ("soak-large", 12, 48)):
            r = self.call("post", "/definitions", {
                "name": name, "version": "1.0.0", "max_duration_minutes": 30, "lab_yaml": lab,
                "resource_requirements": {"cpu_cores": cpu, "memory_gb": mem, "storage_gb": 40},
            })
            if r.status_code not in (200, 201):
                raise RuntimeError(f"registering {name}: {r.status_code} {r.text[:300]}")
            d = r.json()["definition"]
            rr = d["resource_requirements"]
            self.loads[d["id"]] = {"cpu_cores": rr["cpu_cores"], "memory_gb": rr["memory_gb"],
                                   "storage_gb": rr["storage_gb"], "nodes": d["node_count"]}
        log(f"definitions {self.loads}")

    def wait_ready(self, d, secs=60):
        deadline = time.time() + secs
        while time.time() < deadline:
            try:
                if requests.get(d.base + "/healthz", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            if not d.alive():
                return False
            time.sleep(0.2)
        return False

    # --- the booking stream ---------------------------------------------------------------

    def book_one(self, n):
        now = time.time()
        kind = "asap" if self.rng.random() < 0.6 else "slot"
        key = f"{self.prefix}-{n}"
        body = {"definition_id": self.rng.choice(sorted(self.loads)),
                "owner_id": f"student-{n % 37}", "idempotency_key": key}
        slot_end = None
        if kind == "slot":
            start = now + self.rng.uniform(90, 150)
            slot_end = start + self.rng.uniform(45, 90)
            body["timeslot_start"], body["timeslot_end"] = iso(start), iso(slot_end)
        r = self.call("post", "/sessions", body, expect=(200, 201, 409))
        if r.status_code == 409 and kind == "slot":
            err = r.json().get("error", {})
            earliest = (err.get("refusal") or {}).get("earliest_start")
            self.fig.inc("slot_refusals")
            if not earliest:
                self.fig.inc("refused")
                return
            # Rebook at the earliest start ccm offers.
            t = calendar.timegm(time.strptime(earliest[:19], "%Y-%m-%dT%H:%M:%S"))
            t = max(t, now) + 5
            slot_end = t + 60
            body["timeslot_start"], body["timeslot_end"] = iso(t), iso(slot_end)
            body["idempotency_key"] = key = key + "-r"
            r = self.call("post", "/sessions", body, expect=(200, 201, 409))
        if r.status_code not in (200, 201):
            self.fig.inc("refused")
            log(f"booking refused: {r.status_code} {r.text[:200]}")
            return
        out = r.json()
        sid = out["session"]["id"]
        with self.lock:
            if key in self.keys and self.keys[key] != sid:
                self.fig.inc("idempotency_violations")
                log(f"VIOLATION: key {key} gave {self.keys[key]} then {sid}")
            self.keys[key] = sid
            if sid not in self.booked:
                self.booked[sid] = {"kind": kind, "slot_end": slot_end, "cancel_at": None,
                                    "booked_at": now}
                self.fig.inc(f"booked_{kind}")
        if not out.get("created", True):
            self.fig.inc("idempotent_replays")

    def booker(self, until):
        n = 0
        while not self.stop.is_set() and time.time() < until:
            n += 1
            try:
                self.book_one(n)
            except Exception as e:  # a booking that no daemon took is counted, not fatal
                self.fig.inc("booking_errors")
                log(f"booking {n}: {e}")
            self.stop.wait(self.rng.expovariate(self.a.rate))

    def ender(self):
        """Cancels each session when its hold is over; notes end states."""
        while not self.done_tending.is_set():
            with self.lock:
                open_ids = [s for s, b in self.booked.items() if not b.get("ended")]
            for sid in open_ids:
                if self.done_tending.is_set():
                    return
                try:
                    self.tend(sid)
                except Exception as e:  # one failed look is retried on the next round
                    self.fig.inc("cancel_errors")
                    log(f"tending {sid}: {e}")
            time.sleep(1)

    def tend(self, sid):
        b = self.booked[sid]
        now = time.time()
        r = self.call("get", f"/sessions/{sid}", expect=(200,))
        if r.status_code != 200:
            self.fig.inc("get_errors")
            return
        s = r.json()
        if s["state"] in END:
            b["ended"] = s["state"]
            return
        due = False
        if b["kind"] == "slot":
            due = now >= b["slot_end"]
        elif s["state"] in HOLDING:
            if b["cancel_at"] is None:
                b["cancel_at"] = now + self.rng.uniform(20, 60)
            due = now >= b["cancel_at"]
        else:
            # Not bound within 4 minutes: given up by the owner.
            due = now - b["booked_at"] > 240
        if self.ending.is_set() and now > self.ending_at + 60:
            due = True
        if due:
            r = self.call("post", f"/sessions/{sid}/cancel", {"reason": "soak: hold over"},
                          expect=(200, 409))
            if r.status_code == 200:
                b["ended"] = r.json()["state"]
                self.fig.inc(f"cancelled_from_{s['state'].lower()}")
            elif r.status_code == 409:
                self.fig.inc("cancel_conflicts")
            else:
                self.fig.inc("cancel_errors")
                log(f"cancel {sid}: {r.status_code} {r.text[:200]}")

    # --- faults -----------------------------------------------------------------------------

    def killer(self, until):
        while not self.stop.wait(self.a.kill_every) and time.time() < until:
            # A member outage may have left no leader for a moment: wait for one.
            leaders, waited = [], time.time()
            while not leaders and time.time() - waited < 30:
                leaders = [d for d in self.live() if d.leads()]
                if not leaders:
                    time.sleep(0.5)
            if not leaders:
                log("no scheduler leader for 30 s: nothing to kill this round")
                self.fig.inc("kill_rounds_without_leader")
                continue
            d = leaders[0]
            self.down.add(d.name)
            d.kill()
            t0 = time.time()
            self.fig.inc("leader_sigkills")
            log(f"SIGKILLed scheduler leader {d.name}")
            took = None
            while time.time() - t0 < 60:
                if any(x.leads() for x in self.live()):
                    took = time.time() - t0
                    break
                time.sleep(0.2)
            if took is None:
                log("VIOLATION: no standby took the lead within 60 s")
                self.fig.inc("failovers_missed")
            else:
                self.fig.failover_seconds.append(round(took, 1))
                log(f"standby took the lead after {took:.1f} s")
            d.start()
            if self.wait_ready(d):
                self.fig.inc("daemon_restarts")
            else:
                log(f"{d.name} did not come back: see {d.log_path}")
                self.fig.inc("daemon_restart_failures")
            self.down.discard(d.name)

    def member_cycler(self, until):
        i = 0
        while not self.stop.wait(self.a.member_every) and time.time() < until:
            name = f"etcd-m{i % 3 + 1}"
            i += 1
            log(f"stopping {name}")
            self.cluster.member("stop", name)
            self.fig.inc("member_stops")
            self.stop.wait(self.a.member_down)
            self.cluster.member("start", name)
            self.fig.inc("member_restarts")
            log(f"{name} back")

    # --- the run ------------------------------------------------------------------------------

    def run(self):
        a = self.a
        self.from_rev = soak_check.current_revision(self.etcdctl, self.endpoints) + 1
        log(f"prefix {self.prefix}, {a.daemons} daemons, {a.duration:.0f} s, logs in {self.work}")
        for d in self.daemons:
            d.start()
        for d in self.daemons:
            if not self.wait_ready(d):
                raise RuntimeError(f"{d.name} did not start: see {d.log_path}")
        self.register()
        self.ending = threading.Event()
        self.done_tending = threading.Event()
        t0 = time.time()
        until = t0 + a.duration
        threads = [threading.Thread(target=self.booker, args=(until,), daemon=True),
                   threading.Thread(target=self.killer, args=(until,), daemon=True),
                   threading.Thread(target=self.member_cycler, args=(until,), daemon=True)]
        tender = threading.Thread(target=self.ender, daemon=True)
        for t in threads + [tender]:
            t.start()
        while time.time() < until:
            time.sleep(5)
            with self.lock:
                states = {}
                for b in self.booked.values():
                    k = b.get("ended") or "open"
                    states[k] = states.get(k, 0) + 1
            log(f"{time.time() - t0:.0f} s: {dict(self.fig.c)} sessions {states}")
        self.stop.set()
        for t in threads:
            t.join(timeout=180)
        self.ending_at = time.time()
        self.ending.set()
        # Faults over: every member and daemon up again.
        for i in (1, 2, 3):
            if not self.cluster.healthy():
                self.cluster.member("start", f"etcd-m{i}")
        for d in self.daemons:
            if not d.alive():
                d.start()
                self.wait_ready(d)
        deadline = time.time() + a.drain
        while time.time() < deadline:
            with self.lock:
                left = [s for s, b in self.booked.items() if not b.get("ended")]
            if not left:
                break
            log(f"waiting for {len(left)} sessions to end")
            time.sleep(5)
        self.done_tending.set()
        tender.join(timeout=60)
        # Let the daemons settle the last writes, then check from etcd.
        time.sleep(3)
        for d in self.daemons:
            d.kill(signal.SIGTERM)
        booked = sorted(self.booked)
        with open(os.path.join(self.work, "booked.json"), "w", encoding="utf-8") as f:
            json.dump(booked, f)
        with open(os.path.join(self.work, "definitions.json"), "w", encoding="utf-8") as f:
            json.dump(self.loads, f)
        v, figures = soak_check.run(self.etcdctl, self.endpoints, self.prefix, booked,
                                    self.loads, self.from_rev)
        c = self.fig.c
        fo = self.fig.failover_seconds
        figures.update({
            "duration_s": a.duration,
            "bookings": len(booked),
            "booked_asap": c.get("booked_asap", 0),
            "booked_slot": c.get("booked_slot", 0),
            "refused": c.get("refused", 0),
            "leader_sigkills": c.get("leader_sigkills", 0),
            "failover_seconds_max": max(fo, default=None),
            "failover_seconds": fo,
            "member_restarts": c.get("member_restarts", 0),
            "daemon_restarts": c.get("daemon_restarts", 0),
            "api_retries": c.get("api_retries", 0),
            "idempotent_replays": c.get("idempotent_replays", 0),
            "client": dict(c),
        })
        for kind in ("idempotency_violations", "failovers_missed", "daemon_restart_failures",
                     "booking_errors"):
            if c.get(kind):
                v.add(kind, f"{c[kind]} during the run (see the log above)")
        if not booked:
            v.add("nothing booked", "the soak booked no session")
        if a.duration >= a.kill_every and not c.get("leader_sigkills"):
            v.add("no failover", "the leader was never killed")
        with open(os.path.join(self.work, "figures.json"), "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=1, sort_keys=True)
        soak_check.report(v, figures)
        return 1 if v else 0

    def cleanup(self):
        for d in self.daemons:
            d.kill()
        for i in (1, 2, 3):
            try:
                if not self.cluster.healthy():
                    self.cluster.member("start", f"etcd-m{i}")
            except (subprocess.SubprocessError, RuntimeError):
                pass
        if isinstance(self.cluster, OwnCluster):
            self.cluster.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("duration", nargs="?", type=float, default=600, help="seconds (default 600)")
    ap.add_argument("--daemons", type=int, default=int(os.environ.get("SOAK_DAEMONS", "3")))
    ap.add_argument("--rate", type=float, default=0.5, help="bookings per second")
    ap.add_argument("--kill-every", type=float, default=120)
    ap.add_argument("--member-every", type=float, default=40)
    ap.add_argument("--member-down", type=float, default=10)
    ap.add_argument("--ttl", type=int, default=5, help="leader lease TTL (s)")
    ap.add_argument("--drain", type=float, default=420, help="seconds to wait for the ends")
    ap.add_argument("--seed", type=int, default=20261203)
    a = ap.parse_args()
    s = Soak(a)
    try:
        rc = s.run()
    finally:
        s.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()

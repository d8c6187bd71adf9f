"""Shared by the Python test tools (soak_check.py, soak.py, test_soak_check.py, e2e_api.py):
ccm's session state sets and etcd read and written with etcdctl (JSON output, values decoded).

The scripts import it from their own directory (`import ccmtest`).
"""
import base64
import json
import subprocess

# LabletSession::holds_capacity: the states in which a bound session holds its worker's
# capacity and ports (EXPIRED holds them only while still bound).
HOLDING = {"SCHEDULED", "INSTANTIATING", "READY", "RUNNING", "COLLECTING", "GRADING"}
# The states a session ends in.
END_STATES = {"STOPPED", "ARCHIVED", "EXPIRED", "TERMINATED"}


def etcdctl_json(etcdctl, endpoints, *args, timeout=60):
    """Runs `etcdctl --endpoints ENDPOINTS ARGS -w json` and returns its answer, parsed."""
    out = subprocess.run(
        [etcdctl, "--endpoints", endpoints, *args, "-w", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout
    return json.loads(out)


def b64(s):
    """A base64 field of etcdctl's JSON output as bytes (absent: empty)."""
    return base64.b64decode(s) if s else b""


def get_prefix(etcdctl, endpoints, prefix, timeout=60):
    """Every key under `prefix` and its value (bytes)."""
    kvs = etcdctl_json(etcdctl, endpoints, "get", "--prefix", prefix, timeout=timeout)
    kvs = kvs.get("kvs", [])
    return {b64(kv["key"]).decode(): b64(kv.get("value")) for kv in kvs}


def put(etcdctl, endpoints, key, value, timeout=60):
    """Writes `value` (a string) at `key`."""
    subprocess.run([etcdctl, "--endpoints", endpoints, "put", key, value], check=True,
                   capture_output=True, timeout=timeout)

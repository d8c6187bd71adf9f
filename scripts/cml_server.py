#!/usr/bin/env python3
"""A small, stateful stand-in for the Cisco Modeling Labs (CML) controller API, for tests.

It serves exactly the calls ccm's CML adapter makes, plus the few more the official Python
client `virl2-client` needs to run an import / start / wait-until-booted / stop / wipe / remove
flow (scripts/test_cml_server.py proves that), under `/api/v0/`:

  GET    system_information                       (no auth) {"version", "ready", ...}
  POST   authenticate {username, password}        -> the JWT as a JSON string
  GET    authentication / authok                  token check (virl2-client calls it at start)
  POST   import?title=T   (body: lab YAML)        -> {"id", "warnings"}
  GET    labs[?show_all=true]                     -> [lab ids]
  GET    labs/{lab}                               -> lab details (state, title, counts)
  DELETE labs/{lab}                               (only a stopped and wiped lab)
  PUT    labs/{lab}/start | stop | wipe           (204; nodes change state over time)
  GET    labs/{lab}/state | check_if_converged | lab_element_state | topology
  GET    labs/{lab}/nodes[?data=true]             -> node ids, or node data with state and tags
  GET    labs/{lab}/nodes/{node}[/state]
  PATCH  labs/{lab}/nodes/{node}  {"tags": [..]}  (and label, x, y, configuration)

Everything but system_information needs `Authorization: Bearer <jwt>`; an unknown or expired
token answers 401, wrong credentials at authenticate 403, errors carry CML's
`{"code", "description"}` body. Lab state is derived from node states as CML does (any node
queued/started/booted -> STARTED, else any stopped -> STOPPED, else DEFINED_ON_CORE); nodes
boot `--boot-seconds` after a start, stop after `--stop-seconds`, wipe after `--wipe-seconds`;
an import takes `--import-seconds` before it answers.

Test-only routes (no auth, under /_test/):
  GET  /_test/calls               {"calls": {"PUT /labs/{lab}/start": n, ...},
                                    "labs": {lab_id: {"PUT /labs/{lab}/start": n, ...}}}
  POST /_test/fail  {"route": "PUT /labs/{lab}/start", "status": 503, "count": 1,
                     "lab": optional id, "title": optional import title,
                     "body_bytes": optional size of a junk body (status 200 = oversized answer)}
  POST /_test/down  {"seconds": s}   every call (system_information too) answers 503 for s
  POST /_test/expire_tokens          every issued token becomes invalid (401 -> re-auth)
  GET  /_test/healthz

Start: cml_server.py --host 127.0.0.1 --port 18090 --user admin:secret [--user b:pw]
       [--tls-dir DIR]  (creates DIR/ca.pem + a server certificate for 127.0.0.1 and localhost
       with openssl when missing, and serves https; without it, plain http)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/api/v0/"
MAX_BODY = 4 * 1024 * 1024
VERSION = "2.9.0"
TAG_MAX = 64


class ApiError(Exception):
    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


class Lab:
    """One lab: its topology (nodes with new ids, interfaces, links) and a node-state timeline."""

    def __init__(self, lab_id: str, title: str, topo: dict, owner: str, now: float):
        self.id = lab_id
        meta = topo.get("lab") or {}
        self.title = title or str(meta.get("title") or f"Lab {lab_id[:6]}")
        self.description = str(meta.get("description") or "")
        self.notes = str(meta.get("notes") or "")
        self.owner = owner
        self.created = now
        self.modified = now
        self.nodes: dict[str, dict] = {}  # node id -> node data (label, tags, interfaces...)
        self.links: list[dict] = []
        # (time, state) pairs: the nodes' state is the last entry at or before now.
        self.timeline: list[tuple[float, str]] = [(now, "DEFINED_ON_CORE")]
        self._build(topo)

    def _build(self, topo: dict) -> None:
        nodes = topo.get("nodes")
        if not isinstance(nodes, list):
            raise ApiError(400, "topology has no nodes list")
        local: dict[str, str] = {}  # yaml node id -> node uuid
        ifaces: dict[tuple[str, str], str] = {}  # (yaml node id, yaml iface id) -> iface uuid
        for i, n in enumerate(nodes):
            if not isinstance(n, dict):
                raise ApiError(400, f"nodes[{i}] is not a mapping")
            for key in ("id", "label", "node_definition"):
                if not isinstance(n.get(key), str) or not n[key]:
                    raise ApiError(400, f"nodes[{i}].{key} is missing")
            if n["id"] in local:
                raise ApiError(400, f"nodes[{i}].id {n['id']!r} is used twice")
            tags = n.get("tags") or []
            check_tags(tags, f"nodes[{i}].tags")
            nid = str(uuid.uuid4())
            local[n["id"]] = nid
            node_ifaces = []
            for j, itf in enumerate(n.get("interfaces") or []):
                if not isinstance(itf, dict) or not isinstance(itf.get("id"), str):
                    raise ApiError(400, f"nodes[{i}].interfaces[{j}].id is missing")
                iid = str(uuid.uuid4())
                ifaces[(n["id"], itf["id"])] = iid
                node_ifaces.append(
                    {
                        "id": iid,
                        "label": str(itf.get("label") or itf["id"]),
                        "slot": itf.get("slot"),
                        "type": str(itf.get("type") or "physical"),
                        "mac_address": itf.get("mac_address"),
                    }
                )
            self.nodes[nid] = {
                "id": nid,
                "label": n["label"],
                "node_definition": n["node_definition"],
                "image_definition": n.get("image_definition"),
                "configuration": n.get("configuration"),
                "x": int(n.get("x") or 0),
                "y": int(n.get("y") or 0),
                "ram": n.get("ram"),
                "cpus": n.get("cpus"),
                "cpu_limit": n.get("cpu_limit"),
                "data_volume": n.get("data_volume"),
                "boot_disk_size": n.get("boot_disk_size"),
                "hide_links": bool(n.get("hide_links") or False),
                "tags": list(tags),
                "interfaces": node_ifaces,
            }
        for i, link in enumerate(topo.get("links") or []):
            if not isinstance(link, dict):
                raise ApiError(400, f"links[{i}] is not a mapping")
            ends = []
            for n_key, i_key in (("n1", "i1"), ("n2", "i2")):
                key = (link.get(n_key), link.get(i_key))
                if key not in ifaces:
                    raise ApiError(
                        400, f"links[{i}]: interface {key[1]!r} of node {key[0]!r} does not exist"
                    )
                ends.append(ifaces[key])
            self.links.append(
                {"id": str(uuid.uuid4()), "interface_a": ends[0], "interface_b": ends[1],
                 "label": link.get("label")}
            )

    # --- state -------------------------------------------------------------------------------
    def node_state(self, now: float) -> str:
        state = self.timeline[0][1]
        for at, s in self.timeline:
            if at <= now:
                state = s
        return state

    def state(self, now: float) -> str:
        s = self.node_state(now)
        if not self.nodes:  # no nodes: follow the last request
            s = self.timeline[-1][1]
        if s in ("QUEUED", "STARTED", "BOOTED"):
            return "STARTED"
        return "STOPPED" if s == "STOPPED" else "DEFINED_ON_CORE"

    def converged(self, now: float) -> bool:
        return now >= self.timeline[-1][0]

    def schedule(self, now: float, steps: list[tuple[float, str]]) -> None:
        self.timeline = [(now, self.node_state(now))] + [(now + d, s) for d, s in steps]
        self.modified = now

    # --- views --------------------------------------------------------------------------------
    def node_view(self, nid: str, now: float, with_ifaces: bool = False) -> dict:
        n = self.nodes[nid]
        state = self.node_state(now)
        view = {k: v for k, v in n.items() if k != "interfaces"}
        view.update(
            {"lab_id": self.id, "state": state,
             "boot_progress": "Booted" if state == "BOOTED" else "Not running"}
        )
        if with_ifaces:
            view["interfaces"] = [dict(i) for i in n["interfaces"]]
        return view

    def details(self, now: float) -> dict:
        return {
            "id": self.id,
            "state": self.state(now),
            "created": iso(self.created),
            "modified": iso(self.modified),
            "lab_title": self.title,
            "lab_description": self.description,
            "lab_notes": self.notes,
            "owner": self.owner,
            "owner_username": self.owner,
            "node_count": len(self.nodes),
            "link_count": len(self.links),
            "groups": [],
        }

    def topology(self, now: float) -> dict:
        return {
            "lab": {"title": self.title, "description": self.description,
                    "notes": self.notes, "version": "0.3.0"},
            "nodes": [self.node_view(nid, now, with_ifaces=True) for nid in self.nodes],
            "links": [dict(link) for link in self.links],
            "annotations": [],
        }

    def element_state(self, now: float) -> dict:
        s = self.node_state(now)
        link_state = {"BOOTED": "STARTED", "QUEUED": "STARTED"}.get(s, s)
        return {
            "nodes": {nid: s for nid in self.nodes},
            "interfaces": {i["id"]: link_state for n in self.nodes.values()
                           for i in n["interfaces"]},
            "links": {link["id"]: link_state for link in self.links},
        }


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def check_tags(tags, where: str) -> None:
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, f"{where} must be a list of strings")
    if len(tags) > TAG_MAX:
        raise ApiError(400, f"{where} has more than {TAG_MAX} tags")


class Cml:
    """All server state, behind one lock."""

    def __init__(self, users: dict[str, str], timings: dict[str, float]):
        self.lock = threading.Lock()
        self.users = users
        self.t = timings
        self.tokens: dict[str, str] = {}  # token -> username
        self.labs: dict[str, Lab] = {}
        self.calls: dict[str, int] = {}
        self.lab_calls: dict[str, dict[str, int]] = {}
        self.faults: list[dict] = []
        self.down_until = 0.0

    def count(self, route: str, lab: str | None) -> None:
        self.calls[route] = self.calls.get(route, 0) + 1
        if lab:
            per = self.lab_calls.setdefault(lab, {})
            per[route] = per.get(route, 0) + 1

    def take_fault(self, route: str, lab: str | None, title: str | None) -> dict | None:
        for f in self.faults:
            if f["route"] != route or f["count"] <= 0:
                continue
            if f.get("lab") and f["lab"] != lab:
                continue
            if f.get("title") and f["title"] != title:
                continue
            f["count"] -= 1
            return f
        return None


ROUTES = [
    ("GET", r"system_information", "system_information"),
    ("POST", r"authenticate", "authenticate"),
    ("GET", r"authentication", "authentication"),
    ("GET", r"authok", "authok"),
    ("POST", r"import", "import"),
    ("GET", r"labs", "labs"),
    ("GET", r"labs/(?P<lab>[^/]+)", "labs/{lab}"),
    ("DELETE", r"labs/(?P<lab>[^/]+)", "labs/{lab}"),
    ("PUT", r"labs/(?P<lab>[^/]+)/(?P<op>start|stop|wipe)", None),
    ("GET", r"labs/(?P<lab>[^/]+)/(?P<view>state|check_if_converged|lab_element_state|topology"
            r"|nodes|simulation_stats|events|resource_pools)", None),
    ("GET", r"labs/(?P<lab>[^/]+)/nodes/(?P<node>[^/]+)", "labs/{lab}/nodes/{node}"),
    ("GET", r"labs/(?P<lab>[^/]+)/nodes/(?P<node>[^/]+)/state", "labs/{lab}/nodes/{node}/state"),
    ("PATCH", r"labs/(?P<lab>[^/]+)/nodes/(?P<node>[^/]+)", "labs/{lab}/nodes/{node}"),
]
PATCHABLE = {"tags", "label", "x", "y", "configuration"}


def make_handler(cml: Cml):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ccm-cml-test/1"

        def log_message(self, fmt, *args):  # quiet; errors go to stderr below
            pass

        # --- plumbing -----------------------------------------------------------------------
        def _send(self, status: int, body=None, raw: bytes | None = None):
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if status != 204:
                self.wfile.write(data)

        def _error(self, status: int, description: str):
            self._send(status, {"code": status, "description": description})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                raise ApiError(413, f"request body over {MAX_BODY} bytes")
            return self.rfile.read(n) if n else b""

        def _json_body(self):
            raw = self._body()
            try:
                return json.loads(raw or b"null")
            except ValueError as e:
                raise ApiError(400, f"request body is not JSON: {e}")

        def _user(self) -> str:
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer "):
                raise ApiError(401, "No authorization token provided.")
            user = cml.tokens.get(auth[len("Bearer "):].strip())
            if user is None:
                raise ApiError(401, "Authorization token is invalid or expired.")
            return user

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_PATCH(self):
            self._dispatch("PATCH")

        def do_DELETE(self):
            self._dispatch("DELETE")

        def _dispatch(self, method: str):
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path.startswith("/_test/"):
                    return self._test_route(method, url.path[len("/_test/"):])
                if not url.path.startswith(API):
                    raise ApiError(404, f"no such route {url.path}")
                rel = url.path[len(API):].rstrip("/")
                for m, pattern, name in ROUTES:
                    match = re.fullmatch(pattern, rel)
                    if m == method and match:
                        break
                else:
                    raise ApiError(404 if method == "GET" else 405, f"no route {method} {rel}")
                g = match.groupdict()
                if name is None:
                    name = f"labs/{{lab}}/{g.get('op') or g.get('view')}"
                route = f"{method} /{name}"
                with cml.lock:
                    now = time.time()
                    cml.count(route, g.get("lab"))
                    if now < cml.down_until:
                        raise ApiError(503, "controller is down (test fault)")
                    fault = cml.take_fault(route, g.get("lab"), (query.get("title") or [None])[0])
                if fault:
                    if fault.get("body_bytes"):
                        return self._send(fault.get("status", 200),
                                          raw=b"x" * int(fault["body_bytes"]))
                    raise ApiError(fault.get("status", 503), f"injected fault on {route}")
                self._api(method, name, g, query)
            except ApiError as e:
                if e.status >= 500 or e.status == 400:
                    print(f"[cml] {method} {self.path}: {e.status} {e.description}",
                          file=sys.stderr)
                self._error(e.status, e.description)
            except (BrokenPipeError, ConnectionResetError):
                pass

        # --- the CML API ---------------------------------------------------------------------
        def _api(self, method, name, g, query):
            if name == "system_information":
                return self._send(200, {"version": VERSION, "ready": True,
                                        "allow_ssh_pubkey_auth": False,
                                        "oui": "52:54:00", "features": {}})
            if name == "authenticate":
                body = self._json_body()
                if not isinstance(body, dict):
                    raise ApiError(400, "expected {username, password}")
                user, pw = body.get("username"), body.get("password")
                if not isinstance(user, str) or cml.users.get(user) != pw:
                    raise ApiError(403, "Authentication failed!")
                token = secrets.token_urlsafe(32)
                with cml.lock:
                    cml.tokens[token] = user
                return self._send(200, token)
            user = self._user()
            if name == "authentication":
                return self._send(200, {"id": "00000000-0000-4000-8000-" + user.encode().hex()[:12]
                                        .ljust(12, "0"), "username": user, "admin": True,
                                        "token": None})
            if name == "authok":
                return self._send(200, "OK")
            if name == "import":
                return self._import(user, query)
            if name == "labs":
                with cml.lock:
                    ids = [lab.id for lab in cml.labs.values()
                           if lab.owner == user or "true" in query.get("show_all", [])]
                return self._send(200, ids)
            with cml.lock:
                lab = cml.labs.get(g["lab"])
            if lab is None:
                raise ApiError(404, f"Lab not found: {g['lab']}")
            now = time.time()
            if name == "labs/{lab}":
                if method == "GET":
                    with cml.lock:
                        return self._send(200, lab.details(now))
                with cml.lock:
                    if lab.state(now) != "DEFINED_ON_CORE" or not lab.converged(now):
                        raise ApiError(400, f"Lab {lab.id} is not stopped and wiped")
                    del cml.labs[lab.id]
                return self._send(204)
            op = g.get("op")
            if op:
                return self._lab_op(lab, op, now)
            view = g.get("view")
            if view:
                return self._lab_view(lab, view, query, now)
            node = g.get("node")
            with cml.lock:
                if node not in lab.nodes:
                    raise ApiError(404, f"Node not found: {node}")
                if method == "PATCH":
                    return self._patch_node(lab, node, now)
                if name.endswith("/state"):
                    return self._send(200, {"id": node, "state": lab.node_state(now)})
                return self._send(200, lab.node_view(node, now))

        def _import(self, user, query):
            raw = self._body()
            try:
                topo = yaml.safe_load(raw.decode("utf-8"))
            except (UnicodeDecodeError, yaml.YAMLError) as e:
                raise ApiError(400, f"lab YAML does not parse: {e}")
            if not isinstance(topo, dict):
                raise ApiError(400, "lab YAML is not a mapping")
            title = (query.get("title") or [""])[0]
            lab_id = str(uuid.uuid4())
            time.sleep(cml.t["import"])
            lab = Lab(lab_id, title, topo, user, time.time())
            with cml.lock:
                cml.labs[lab_id] = lab
            return self._send(200, {"id": lab_id, "warnings": []})

        def _lab_op(self, lab: Lab, op: str, now: float):
            t = cml.t
            with cml.lock:
                cur = lab.node_state(now)
                if op == "start":
                    if cur not in ("QUEUED", "STARTED", "BOOTED") or lab.timeline[-1][1] == "STOPPED":
                        lab.schedule(now, [(0.0, "STARTED"), (t["boot"], "BOOTED")])
                elif op == "stop":
                    if lab.state(now) == "STARTED" and lab.timeline[-1][1] != "STOPPED":
                        lab.schedule(now, [(t["stop"], "STOPPED")])
                elif op == "wipe":
                    if lab.state(now) == "STARTED":
                        raise ApiError(400, f"Lab {lab.id} is running: stop it before a wipe")
                    if lab.timeline[-1][1] != "DEFINED_ON_CORE":
                        lab.schedule(now, [(t["wipe"], "DEFINED_ON_CORE")])
            return self._send(204)

        def _lab_view(self, lab: Lab, view: str, query, now: float):
            with cml.lock:
                if view == "state":
                    return self._send(200, lab.state(now))
                if view == "check_if_converged":
                    return self._send(200, lab.converged(now))
                if view == "lab_element_state":
                    return self._send(200, lab.element_state(now))
                if view == "topology":
                    return self._send(200, lab.topology(now))
                if view == "nodes":
                    if "true" in query.get("data", []):
                        ifaces = "true" in query.get("populate_interfaces", [])
                        return self._send(200, [lab.node_view(n, now, ifaces) for n in lab.nodes])
                    return self._send(200, list(lab.nodes))
                if view == "simulation_stats":
                    return self._send(200, {"nodes": {}, "links": {}})
                if view == "events":
                    return self._send(200, [])
                return self._send(200, [])  # resource_pools

        def _patch_node(self, lab: Lab, node: str, now: float):
            body = self._json_body()
            if not isinstance(body, dict) or not body:
                raise ApiError(400, "expected a JSON object of node properties")
            unknown = sorted(set(body) - PATCHABLE)
            if unknown:
                raise ApiError(400, f"node properties not patchable here: {unknown}")
            if "tags" in body:
                check_tags(body["tags"], "tags")
            lab.nodes[node].update(body)
            lab.modified = now
            return self._send(200, node)

        # --- test routes ---------------------------------------------------------------------
        def _test_route(self, method, name):
            if method == "GET" and name == "healthz":
                return self._send(200, {"ok": True})
            if method == "GET" and name == "calls":
                with cml.lock:
                    return self._send(200, {"calls": dict(cml.calls), "labs": cml.lab_calls})
            if method == "POST" and name == "fail":
                f = self._json_body()
                if not isinstance(f, dict) or not isinstance(f.get("route"), str):
                    raise ApiError(400, "expected {route, status, count}")
                f.setdefault("count", 1)
                f.setdefault("status", 503)
                with cml.lock:
                    cml.faults.append(f)
                return self._send(204)
            if method == "POST" and name == "down":
                f = self._json_body() or {}
                with cml.lock:
                    cml.down_until = time.time() + float(f.get("seconds", 1))
                return self._send(204)
            if method == "POST" and name == "expire_tokens":
                with cml.lock:
                    cml.tokens.clear()
                return self._send(204)
            raise ApiError(404, f"no test route {method} {name}")

    return Handler


def ensure_certs(tls_dir: str) -> tuple[str, str]:
    """A CA (ca.pem) and a server certificate it signed for 127.0.0.1 and localhost."""
    os.makedirs(tls_dir, exist_ok=True)
    p = lambda n: os.path.join(tls_dir, n)  # noqa: E731
    if os.path.exists(p("server.pem")) and os.path.exists(p("server.key")):
        return p("server.pem"), p("server.key")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa
    run("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30",
        "-subj", "/CN=ccm CML test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=localhost")
    with open(p("server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-out", p("server.pem"), "-days", "30", "-extfile", p("server.ext"))
    return p("server.pem"), p("server.key")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD (repeatable)")
    ap.add_argument("--tls-dir", help="serve https with a certificate kept in this directory")
    ap.add_argument("--import-seconds", type=float, default=0.2)
    ap.add_argument("--boot-seconds", type=float, default=1.0)
    ap.add_argument("--stop-seconds", type=float, default=0.3)
    ap.add_argument("--wipe-seconds", type=float, default=0.3)
    a = ap.parse_args()
    users = dict(u.split(":", 1) for u in (a.user or ["admin:admin"]))
    cml = Cml(users, {"import": a.import_seconds, "boot": a.boot_seconds,
                      "stop": a.stop_seconds, "wipe": a.wipe_seconds})
    server = ThreadingHTTPServer((a.host, a.port), make_handler(cml))
    server.daemon_threads = True
    scheme = "http"
    if a.tls_dir:
        cert, key = ensure_certs(a.tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    print(f"[cml] serving {scheme}://{a.host}:{a.port}{API}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A CloudEvents receiver for ccm's tests, built on the official Python `cloudevents` SDK.

POST /            accept one event (binary or structured mode), parsed by the SDK, recorded
GET  /events      every recorded event as JSON [{id, type, source, subject, time, data, specversion,
                  datacontenttype, mode}]
POST /reset       forget recorded events, counters and injected faults
GET  /healthz     200 when up
POST /fail        fault injection for delivery tests, JSON body {"status": 503, "count": 2, "delay_ms": 0}:
                  the next `count` event POSTs wait `delay_ms`, then are answered with `status` and not
                  recorded (status 0 or absent: only the delay, then the event is accepted as usual)
GET  /stats       {"attempts": event POSTs seen, "accepted": recorded, "injected": answered by a fault,
                   "rejected": refused by the SDK}
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # cloudevents 2.x keeps the 1.x HTTP API under cloudevents.v1
    from cloudevents.v1.http import from_http
except ImportError:  # cloudevents 1.x
    from cloudevents.http import from_http

EVENTS = []
STATS = {"attempts": 0, "accepted": 0, "injected": 0, "rejected": 0}
FAULT = {"status": 0, "count": 0, "delay_ms": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, code, body=b"", ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self._send(200, b"ok", "text/plain")
        if self.path == "/events":
            with LOCK:
                body = json.dumps(EVENTS).encode()
            return self._send(200, body)
        if self.path == "/stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self._send(200, body)
        return self._send(404)

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        body = self._body()
        if self.path == "/reset":
            with LOCK:
                EVENTS.clear()
                for k in STATS:
                    STATS[k] = 0
                FAULT.update(status=0, count=0, delay_ms=0)
            return self._send(204)
        if self.path == "/fail":
            try:
                spec = json.loads(body or b"{}")
                fault = {k: int(spec.get(k, 0)) for k in ("status", "count", "delay_ms")}
            except (ValueError, TypeError, AttributeError) as e:
                return self._send(400, json.dumps({"error": "bad fault spec: %s" % e}).encode())
            with LOCK:
                FAULT.update(fault)
            return self._send(204)
        with LOCK:
            STATS["attempts"] += 1
            fault = None
            if FAULT["count"] > 0:
                FAULT["count"] -= 1
                fault = dict(FAULT)
        if fault is not None:
            if fault["delay_ms"] > 0:
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault["status"]:
                with LOCK:
                    STATS["injected"] += 1
                return self._send(fault["status"], json.dumps({"error": "injected fault"}).encode())
        try:
            event = from_http(dict(self.headers), body)
        except Exception as e:  # the SDK rejects malformed events
            with LOCK:
                STATS["rejected"] += 1
            return self._send(400, json.dumps({"error": str(e)}).encode())
        attrs = event.get_attributes()
        data = event.get_data()
        if isinstance(data, (bytes, bytearray)):
            try:
                data = json.loads(data)
            except ValueError:
                data = data.decode("utf-8", "replace")
        record = {k: attrs.get(k) for k in ("id", "type", "source", "subject", "time", "specversion", "datacontenttype")}
        record["data"] = data
        record["mode"] = "structured" if (self.headers.get("Content-Type") or "").startswith("application/cloudevents") else "binary"
        with LOCK:
            EVENTS.append(record)
            STATS["accepted"] += 1
        return self._send(202)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    a = ap.parse_args()
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A CloudEvents receiver for ccm's tests, built on the official Python `cloudevents` SDK.

POST /            accept one event (binary or structured mode), parsed by the SDK, recorded
GET  /events      every recorded event as JSON [{id, type, source, subject, time, data, specversion}]
POST /reset       forget recorded events
GET  /healthz     200 when up
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # cloudevents 2.x keeps the 1.x HTTP API under cloudevents.v1
    from cloudevents.v1.http import from_http
except ImportError:  # cloudevents 1.x
    from cloudevents.http import from_http

EVENTS = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
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
        return self._send(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/reset":
            with LOCK:
                EVENTS.clear()
            return self._send(204)
        try:
            event = from_http(dict(self.headers), body)
        except Exception as e:  # the SDK rejects malformed events
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
        return self._send(202)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    a = ap.parse_args()
    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

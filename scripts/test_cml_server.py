#!/usr/bin/env python3
"""The CML test server (scripts/cml_server.py) against the official client `virl2-client`.

The server is only a credible stand-in for CML if the official client runs its flow against it:
import a lab from a real-looking CML YAML, write port tags into a node, start, wait until every
node is BOOTED, stop, wipe, remove. Exits non-zero on any failure.

  CCM_TEST_CML_URL=https://127.0.0.1:18090 CCM_TEST_CML_USER=admin CCM_TEST_CML_PASSWORD=... \
      python scripts/test_cml_server.py
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import ssl
import sys
import time
import unittest
import urllib.request
import uuid

from virl2_client import ClientLibrary
from virl2_client.exceptions import APIError

LAB_YAML = """\
annotations: []
lab:
  description: Two routers and a jump host, OSPF between r1 and r2.
  notes: ''
  title: CCNA Basic Routing
  version: 0.2.2
links:
  - id: l0
    i1: i1
    i2: i1
    n1: n0
    n2: n1
    label: r1-GigabitEthernet0/1<->r2-GigabitEthernet0/1
  - id: l1
    i1: i2
    i2: i0
    n1: n0
    n2: n2
    label: r1-GigabitEthernet0/2<->jump-ens2
nodes:
  - boot_disk_size: null
    configuration: |-
      hostname r1
    cpu_limit: null
    cpus: null
    data_volume: null
    hide_links: false
    id: n0
    image_definition: null
    label: r1
    node_definition: iosv
    ram: 512
    tags:
      - serial:5041
      - ssh:5042
    x: -200
    y: 0
    interfaces:
      - id: i0
        label: Loopback0
        type: loopback
      - id: i1
        label: GigabitEthernet0/1
        slot: 1
        type: physical
      - id: i2
        label: GigabitEthernet0/2
        slot: 2
        type: physical
  - id: n1
    label: r2
    node_definition: iosv
    tags: [serial:5043]
    x: 200
    y: 0
    interfaces:
      - id: i1
        label: GigabitEthernet0/1
        slot: 1
        type: physical
  - id: n2
    label: jump-host
    node_definition: ubuntu
    tags: ["ssh:5044"]
    x: 0
    y: 200
    interfaces:
      - id: i0
        label: ens2
        slot: 0
        type: physical
"""


def env(name: str, default: str | None = None) -> str:
    v = os.environ.get(name, default)
    if not v:
        sys.exit(f"{name} is not set (scripts/services.sh writes it to .ci-work/run/env)")
    return v


URL = env("CCM_TEST_CML_URL")
USER = env("CCM_TEST_CML_USER", "admin")
PASSWORD = env("CCM_TEST_CML_PASSWORD", "ccm-test-secret")


def calls() -> dict:
    ctx = ssl._create_unverified_context()  # the test server's own certificate
    with urllib.request.urlopen(f"{URL}/_test/calls", context=ctx, timeout=10) as r:
        return json.load(r)


class OfficialClientFlow(unittest.TestCase):
    def client(self) -> ClientLibrary:
        c = ClientLibrary(URL, USER, PASSWORD, ssl_verify=False, raise_for_auth_failure=True,
                          allow_http=URL.startswith("http:"), convergence_wait_time=0.2,
                          convergence_wait_max_iter=150)
        return c

    def test_client_version_is_2_10(self):
        v = importlib.metadata.version("virl2-client")
        self.assertTrue(v.startswith("2.10."), v)

    def test_import_tag_start_boot_stop_wipe_remove(self):
        c = self.client()
        self.assertTrue(c.is_system_ready())
        title = f"ccm-flow-{uuid.uuid4().hex[:8]}"
        lab = c.import_lab(LAB_YAML, title=title)
        lab.wait_time = 0.2  # an imported lab does not take the client's convergence settings
        self.assertEqual(lab.title, title)
        self.assertEqual(lab.state(), "DEFINED_ON_CORE")
        self.assertEqual(sorted(n.label for n in lab.nodes()), ["jump-host", "r1", "r2"])
        self.assertEqual(len(lab.links()), 2)
        self.assertIn(lab.id, c.get_lab_list(show_all=True))

        r1 = lab.get_node_by_label("r1")
        self.assertEqual(r1.tags(), ["serial:5041", "ssh:5042"])
        r1.add_tag("vnc:5045")
        # A second client sees the tag: it went to the server, not only into the local model.
        other = self.client().join_existing_lab(lab.id)
        self.assertIn("vnc:5045", other.get_node_by_label("r1").tags())

        lab.start(wait=True)  # polls check_if_converged until every node has booted
        self.assertEqual(lab.state(), "STARTED")
        lab.sync_states()
        self.assertTrue(all(n.is_booted() for n in lab.nodes()),
                        [(n.label, n.state) for n in lab.nodes()])
        self.assertEqual(lab.details()["state"], "STARTED")

        with self.assertRaises(APIError, msg="a running lab cannot be removed"):
            lab.remove()

        lab.stop(wait=True)
        self.assertEqual(lab.state(), "STOPPED")
        lab.wipe(wait=True)
        self.assertEqual(lab.state(), "DEFINED_ON_CORE")
        lab_id = lab.id
        lab.remove()
        self.assertNotIn(lab_id, c.get_lab_list(show_all=True))

        per_lab = calls()["labs"][lab_id]
        self.assertEqual(per_lab.get("PUT /labs/{lab}/start"), 1, per_lab)
        self.assertEqual(per_lab.get("PUT /labs/{lab}/wipe"), 1, per_lab)
        self.assertEqual(per_lab.get("PATCH /labs/{lab}/nodes/{node}"), 1, per_lab)
        self.assertGreaterEqual(per_lab.get("GET /labs/{lab}/check_if_converged", 0), 3, per_lab)

    def test_wrong_password_is_refused(self):
        with self.assertRaises(Exception):
            ClientLibrary(URL, USER, PASSWORD + "-wrong", ssl_verify=False,
                          raise_for_auth_failure=True, allow_http=URL.startswith("http:"))

    def test_bad_yaml_is_refused_with_a_reason(self):
        c = self.client()
        with self.assertRaises(APIError) as e:
            c.import_lab("nodes:\n  - id: n0\n    label: r1\nlinks: []\n", title="bad")
        self.assertIn("node_definition", str(e.exception))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)

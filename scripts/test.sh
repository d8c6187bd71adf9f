#!/usr/bin/env bash
# The one test command: installs what is missing, starts the test servers, runs every test of
# the workspace (unit, property, behaviour suites against real etcd / SecantusDB / moto /
# CloudEvents receiver, CLI tests), and stops the servers by pid — also when tests fail.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
trap 'bash scripts/services.sh stop' EXIT
bash scripts/services.sh start
# shellcheck disable=SC1091
source .ci-work/run/env
status=0
cargo test --workspace --all-features --no-fail-fast "$@" || status=$?
# The 2-minute soak (scripts/soak.sh; the full run is 10 minutes): three `ccm serve` on the
# 3-member cluster, the leader SIGKILLed and etcd members restarted while sessions are booked,
# then checked from etcd. The binary is the one the tests above built.
SOAK_BIN="$ROOT/target/debug/ccm" bash scripts/soak.sh 120 --kill-every 45 --member-every 30 \
  || status=$?
exit "$status"

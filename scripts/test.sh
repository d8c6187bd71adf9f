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
cargo test --workspace --all-features --no-fail-fast "$@"

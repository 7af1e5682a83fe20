#!/usr/bin/env bash
# What an open status page costs the requests: two identical gateway pairs over one instant
# llm-sim; one of them has /status.json fetched every POLL_MS (the page polls every 1000 ms; the
# stress case, 100 ms, is ten pages open at once). Both answer the same 1-client interleaved
# requests (alternating, so both see the same noise) and the same 32-worker load; the ratios
# watched ÷ unwatched are the page's cost, CPU counted over each pair's two processes (the
# snapshot work lands there; the poller's own curl does not).
#   REQUESTS (2000) LOAD_SECONDS (5) POLL_MS (1000) OUT (bench/results) LLMGW_BIN_DIR (release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
REQUESTS="${REQUESTS:-2000}"; LOAD_SECONDS="${LOAD_SECONDS:-5}"; POLL_MS="${POLL_MS:-1000}"
OUT="${OUT:-bench/results}"; mkdir -p "$OUT"
if [ -n "${LLMGW_BIN_DIR:-}" ]; then BIN="$LLMGW_BIN_DIR"; else cargo build --release --quiet --bins; BIN=target/release; fi
base="${PORT_BASE:-22000}"
SIM_PORT=$((base + 1)); SCHED_A=$((base + 2)); GW_A=$((base + 3)); SCHED_B=$((base + 4)); GW_B=$((base + 5))
SIM_URL="http://127.0.0.1:$SIM_PORT"; CHAT=/v1/chat/completions
PIDS=()
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop_all EXIT INT TERM
RESULTS="$OUT/status_cost.jsonl"; : >"$RESULTS"
wait_ok() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "$1 never ready" >&2; exit 1; }
start_pair() { # sched-port gw-port -> PAIR_PIDS
  RUST_LOG=info SCHEDULER_LISTEN="127.0.0.1:$1" OLLAMA_BASE="$SIM_URL" SCHEDULER_PROBE_INTERVAL_MS=200 \
    SCHEDULER_MAX_CONCURRENCY=100000 SCHEDULER_MAX_QUEUE=100000 SCHEDULER_METRICS_LISTEN="127.0.0.1:0" \
    "$BIN/scheduler" 2>/dev/null & local sched=$!
  RUST_LOG=info GATEWAY_LISTEN="127.0.0.1:$2" SCHEDULER_URL="http://127.0.0.1:$1" "$BIN/gateway" 2>/dev/null & local gw=$!
  PIDS+=("$sched" "$gw"); PAIR_PIDS="$gw,$sched"
  wait_ok "http://127.0.0.1:$2/readyz"
}
env SIM_LISTEN="127.0.0.1:$SIM_PORT" SIM_INSTANT=true SIM_SLOTS=100000 SIM_MAX_QUEUE=100000 "$BIN/llm-sim" 2>/dev/null &
PIDS+=($!); wait_ok "$SIM_URL/api/tags"
start_pair "$SCHED_A" "$GW_A"; UNWATCHED="$PAIR_PIDS"
start_pair "$SCHED_B" "$GW_B"; WATCHED="$PAIR_PIDS"
# The page's poll, as the browser makes it (open mode, loopback).
( interval=$(awk "BEGIN{print $POLL_MS/1000}")
  while true; do curl -fsS -o /dev/null "http://127.0.0.1:$GW_B/status.json" || true; sleep "$interval"; done ) &
PIDS+=($!)
sleep 1
targets=(--target "unwatched=http://127.0.0.1:$GW_A$CHAT" --target "watched=http://127.0.0.1:$GW_B$CHAT"
  --pids "unwatched=$UNWATCHED" --pids "watched=$WATCHED")
echo "status_cost: $(nproc) cores, poll every $POLL_MS ms, commit $(git rev-parse --short HEAD 2>/dev/null || echo none)" >&2
"$BIN/llmgw-overhead" interleaved "${targets[@]}" --tag "poll_${POLL_MS}ms" --requests "$REQUESTS" | tee -a "$RESULTS" >&2
"$BIN/llmgw-overhead" load "${targets[@]}" --tag "poll_${POLL_MS}ms" --workers 32 --seconds "$LOAD_SECONDS" | tee -a "$RESULTS" >&2
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
by = {(r["experiment"], r["target"]): r for r in rows}
one_u, one_w = by[("interleaved", "unwatched")], by[("interleaved", "watched")]
load_u, load_w = by[("load", "unwatched")], by[("load", "watched")]
print(f"1 client: p50 {one_w['p50_ms']:.3f} vs {one_u['p50_ms']:.3f} ms ({one_w['p50_ms']/one_u['p50_ms']:.2f}x), "
      f"p99 {one_w['p99_ms']:.3f} vs {one_u['p99_ms']:.3f} ms ({one_w['p99_ms']/one_u['p99_ms']:.2f}x), "
      f"CPU {one_w['cpu_us_per_request']} vs {one_u['cpu_us_per_request']} us ({one_w['cpu_us_per_request']/one_u['cpu_us_per_request']:.2f}x)")
print(f"32 workers: {load_w['rps']:.0f} vs {load_u['rps']:.0f} rps ({load_w['rps']/load_u['rps']:.2f}x), "
      f"CPU {load_w['cpu_us_per_request']} vs {load_u['cpu_us_per_request']} us ({load_w['cpu_us_per_request']/load_u['cpu_us_per_request']:.2f}x)")
PY

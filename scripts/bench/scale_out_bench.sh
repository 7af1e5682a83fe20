#!/usr/bin/env bash
# What high availability costs on the request path: one instant llm-sim behind two gateways —
# one talking to a single scheduler (the baseline, no lease), one listing two scheduler replicas
# of one group that share a Redis lease (the leader serves) — interleaved in one run.
#   WORKERS (default 1,32)  SECONDS_PER_POINT (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bins
BIN=target/release
PIDS=()
stop() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
export RUST_LOG="${RUST_LOG:-info}"
SIM_LISTEN=127.0.0.1:18434 SIM_INSTANT=true SIM_SLOTS=256 "$BIN/llm-sim" >/dev/null 2>&1 & PIDS+=($!)
redis-server --port 18379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!)
scheduler() { # port [VAR=value…]
  local port="$1"; shift
  env SCHEDULER_LISTEN="127.0.0.1:$port" SCHEDULER_METRICS_LISTEN="127.0.0.1:$((port + 1000))" \
    OLLAMA_BASE=http://127.0.0.1:18434 SCHEDULER_MAX_CONCURRENCY=256 SCHEDULER_PROBE_INTERVAL_MS=200 "$@" \
    "$BIN/scheduler" >/dev/null 2>&1 & PIDS+=($!)
}
scheduler 18051
scheduler 18052 SCHEDULER_REDIS_URL=redis://127.0.0.1:18379/0
scheduler 18053 SCHEDULER_REDIS_URL=redis://127.0.0.1:18379/0
gateway() { # port scheduler-urls
  GATEWAY_LISTEN="127.0.0.1:$1" SCHEDULER_URL="$2" "$BIN/gateway" >/dev/null 2>&1 & PIDS+=($!)
}
gateway 18080 http://127.0.0.1:18051
gateway 18081 http://127.0.0.1:18052,http://127.0.0.1:18053
for port in 18080 18081; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "bench: $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo none), RUST_LOG=$RUST_LOG, instant upstream"
"$BIN/llmgw-bench" --workers "${WORKERS:-1,32}" --seconds "${SECONDS_PER_POINT:-5}" \
  --target "one-scheduler=http://127.0.0.1:18080/v1/chat/completions" \
  --target "ha-pair=http://127.0.0.1:18081/v1/chat/completions"

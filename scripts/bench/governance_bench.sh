#!/usr/bin/env bash
# What API keys and limits cost: one llm-sim (instant) and one scheduler behind three gateways —
# open mode (the baseline, measured in the same run), keys + every limit in the in-memory store,
# and keys + every limit in a local redis-server — interleaved per worker count.
#   WORKERS (default 1,64)  SECONDS_PER_POINT (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bins
BIN=target/release
TMP="$(mktemp -d)"; PIDS=()
stop() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap stop EXIT INT TERM
export RUST_LOG="${RUST_LOG:-info}"
SIM_LISTEN=127.0.0.1:18434 SIM_INSTANT=true SIM_SLOTS=256 "$BIN/llm-sim" >/dev/null 2>&1 & PIDS+=($!)
SCHEDULER_LISTEN=127.0.0.1:18051 SCHEDULER_METRICS_LISTEN=127.0.0.1:18464 OLLAMA_BASE=http://127.0.0.1:18434 \
  SCHEDULER_MAX_CONCURRENCY=256 SCHEDULER_PROBE_INTERVAL_MS=200 "$BIN/scheduler" >/dev/null 2>&1 & PIDS+=($!)
redis-server --port 18379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null & PIDS+=($!)
KEY="sk-bench-$RANDOM$RANDOM"
HASH="$(echo "$KEY" | "$BIN/gateway" hash-key)"
tenant() {
  cat <<TOML
$1
[[tenant]]
name = "bench"
rpm = 1000000000
tpm = 1000000000000
max_concurrent = 100000
tokens_per_day = 1000000000000000
tokens_per_month = 1000000000000000
[[key]]
tenant = "bench"
sha256 = "$HASH"
TOML
}
tenant "" > "$TMP/memory.toml"
tenant $'[store]\nredis_url = "redis://127.0.0.1:18379/0"' > "$TMP/redis.toml"
start_gateway() { # port [VAR=value…]
  local port="$1"; shift
  env GATEWAY_LISTEN="127.0.0.1:$port" SCHEDULER_URL=http://127.0.0.1:18051 "$@" \
    "$BIN/gateway" >/dev/null 2>&1 & PIDS+=($!)
}
start_gateway 18080
start_gateway 18081 GATEWAY_CONFIG="$TMP/memory.toml"
start_gateway 18082 GATEWAY_CONFIG="$TMP/redis.toml"
for port in 18080 18081 18082; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "bench: $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo none), RUST_LOG=$RUST_LOG, instant upstream"
"$BIN/llmgw-bench" --workers "${WORKERS:-1,64}" --seconds "${SECONDS_PER_POINT:-5}" --api-key "$KEY" \
  --target "open=http://127.0.0.1:18080/v1/chat/completions" \
  --target "keys+memory=http://127.0.0.1:18081/v1/chat/completions" \
  --target "keys+redis=http://127.0.0.1:18082/v1/chat/completions"

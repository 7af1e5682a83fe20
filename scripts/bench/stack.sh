#!/usr/bin/env bash
# Shared by the bench scripts: builds release binaries and starts llm-sim + scheduler + gateway
# on fixed loopback ports; `stop_stack` ends them. Sim and scheduler knobs come from the
# caller's environment (SIM_*, SCHEDULER_*).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet --bins
BIN=target/release
SIM_PORT="${SIM_PORT:-18434}"; SCHED_PORT="${SCHED_PORT:-18051}"; GW_PORT="${GW_PORT:-18080}"
SIM_URL="http://127.0.0.1:$SIM_PORT"; GW_URL="http://127.0.0.1:$GW_PORT"
STACK_PIDS=()
stop_stack() { kill "${STACK_PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop_stack EXIT INT TERM
export RUST_LOG="${RUST_LOG:-warn}"
SIM_LISTEN="127.0.0.1:$SIM_PORT" "$BIN/llm-sim" & STACK_PIDS+=($!)
SCHEDULER_LISTEN="127.0.0.1:$SCHED_PORT" OLLAMA_BASE="$SIM_URL" SCHEDULER_PROBE_INTERVAL_MS=200 \
  SCHEDULER_METRICS_LISTEN="127.0.0.1:${METRICS_PORT:-18464}" \
  "$BIN/scheduler" & STACK_PIDS+=($!)
GATEWAY_LISTEN="127.0.0.1:$GW_PORT" SCHEDULER_URL="http://127.0.0.1:$SCHED_PORT" "$BIN/gateway" & STACK_PIDS+=($!)
# The zero-logic skeleton of the same two hops (bench/src/bin/skeleton.rs): the floor to compare with.
SKEL_MID_PORT="${SKEL_MID_PORT:-19051}"; SKEL_PORT="${SKEL_PORT:-19080}"; SKEL_URL="http://127.0.0.1:$SKEL_PORT"
"$BIN/skeleton" mid --listen "127.0.0.1:$SKEL_MID_PORT" --upstream "$SIM_URL" & STACK_PIDS+=($!)
"$BIN/skeleton" edge --listen "127.0.0.1:$SKEL_PORT" --mid "http://127.0.0.1:$SKEL_MID_PORT" & STACK_PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS "$GW_URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$GW_URL/readyz" >/dev/null || { echo "bench: stack did not become ready" >&2; exit 1; }
echo "bench: $(nproc) cores, $(uname -r), $(rustc --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
echo "bench: sim slots=${SIM_SLOTS:-4} ttft=${SIM_TTFT_MS:-50}ms tpot=${SIM_TPOT_MS:-20}ms tokens=${SIM_OUTPUT_TOKENS:-16} instant=${SIM_INSTANT:-false}; scheduler slots=${SCHEDULER_MAX_CONCURRENCY:-4}"

#!/usr/bin/env bash
# What the gateway pair costs, in one run: starts llm-sim, the zero-logic skeleton of the same two
# hops (bench/src/bin/skeleton.rs), the pair at the default log level (info) and a second pair at
# warn, then measures every row of the overhead table against direct-to-upstream in the same run
# and prints it with its target and a verdict (scripts/bench/overhead_report.py), plus a PNG plot.
#
#   REQUESTS (2000)      interleaved rounds at 1 client (one request per target per round)
#   LOAD_WORKERS (32)    closed-loop workers for CPU per request under load
#   STREAMS (1024)       held streams for memory per stream, and concurrent streams for 15 s
#   FLOOD_SECONDS (15)   how long the 1024 concurrent streams run
#   GAP_REQUESTS (60)    paced streamed requests for chunk gaps (16 chunks each)
#   SWEEP (1,4,16,32)    workers for the seed-scenario TTFT plot (4 slots, 50 ms TTFT, 20 ms/token)
#   OUT (bench/results)  where overhead.jsonl, overhead.md and overhead.png go
#   LLMGW_BIN_DIR        use these binaries instead of building release ones (CI smoke: debug)
#   SMOKE=1              tiny sizes: checks the script end to end, not the numbers
#   REAL_ENGINE=1        also the seed sweep against llama.cpp + SmolLM2-135M (one slot), direct vs
#                        the pair (prepares the engine with scripts/test/real_engine_setup.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ "${SMOKE:-0}" = 1 ]; then
  : "${REQUESTS:=20}" "${LOAD_WORKERS:=4}" "${LOAD_SECONDS:=1}" "${STREAMS:=16}" \
    "${FLOOD_SECONDS:=1}" "${GAP_REQUESTS:=2}" "${SWEEP:=1,4}" "${SWEEP_SECONDS:=1}"
fi
REQUESTS="${REQUESTS:-2000}"; LOAD_WORKERS="${LOAD_WORKERS:-32}"; LOAD_SECONDS="${LOAD_SECONDS:-5}"
STREAMS="${STREAMS:-1024}"; FLOOD_SECONDS="${FLOOD_SECONDS:-15}"; GAP_REQUESTS="${GAP_REQUESTS:-60}"
SWEEP="${SWEEP:-1,4,16,32}"; SWEEP_SECONDS="${SWEEP_SECONDS:-5}"
OUT="${OUT:-bench/results}"; mkdir -p "$OUT"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if [ -n "${LLMGW_BIN_DIR:-}" ]; then
  BIN="$LLMGW_BIN_DIR"
else
  cargo build --release --quiet --bins
  BIN=target/release
fi
base="${PORT_BASE:-21000}"
SIM_PORT=$((base + 1)); SKEL_MID_PORT=$((base + 2)); SKEL_PORT=$((base + 3))
SCHED_PORT=$((base + 4)); GW_PORT=$((base + 5)); SCHED_WARN_PORT=$((base + 6)); GW_WARN_PORT=$((base + 7))
SCHED_1T_PORT=$((base + 8)); GW_1T_PORT=$((base + 9))
SIM_URL="http://127.0.0.1:$SIM_PORT"
PIDS=()
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop_all EXIT INT TERM
RESULTS="$OUT/overhead.jsonl"; : >"$RESULTS"
note() { printf '%s\n' "$*" >&2; }
wait_ok() { # url: poll until it answers 200, with a deadline
  for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  note "overhead: $1 never became ready"; exit 1
}
wait_chat() { # url: until one chat completion goes through (backend probed healthy)
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null -H 'content-type: application/json' \
      -d '{"model":"llama3.2","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  note "overhead: no completion through $1"; exit 1
}
start_sim() { # env assignments for the simulator
  env SIM_LISTEN="127.0.0.1:$SIM_PORT" SIM_MAX_QUEUE=100000 "$@" "$BIN/llm-sim" 2>/dev/null & SIM_PID=$!
  PIDS+=("$SIM_PID")
  wait_ok "$SIM_URL/api/tags"
}
start_pair() { # log-level sched-port gw-port slots [worker-threads] -> sets PAIR_PIDS
  local level=$1 sport=$2 gport=$3 slots=$4 threads=${5:-0}
  GATEWAY_WORKER_THREADS=$threads SCHEDULER_WORKER_THREADS=$threads \
  RUST_LOG=$level SCHEDULER_LISTEN="127.0.0.1:$sport" OLLAMA_BASE="$SIM_URL" \
    SCHEDULER_PROBE_INTERVAL_MS=200 SCHEDULER_MAX_CONCURRENCY="$slots" SCHEDULER_MAX_QUEUE=100000 \
    SCHEDULER_METRICS_LISTEN="127.0.0.1:0" "$BIN/scheduler" 2>/dev/null & local sched=$!
  RUST_LOG=$level GATEWAY_LISTEN="127.0.0.1:$gport" SCHEDULER_URL="http://127.0.0.1:$sport" \
    "$BIN/gateway" 2>/dev/null & local gw=$!
  PIDS+=("$sched" "$gw")
  PAIR_PIDS="$gw,$sched"
  wait_ok "http://127.0.0.1:$gport/readyz"
}
# Logs go to /dev/null, as to a fast log shipper: what is measured is the formatting and the
# write, not a terminal's speed.
measure() { "$BIN/llmgw-overhead" "$@" | tee -a "$RESULTS" >&2; }

note "overhead: $(nproc) cores, $(uname -r), $(rustc --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"

# --- Phase 1: an instant upstream, so everything measured is the hops' own cost.
start_sim SIM_INSTANT=true SIM_SLOTS=100000
"$BIN/skeleton" mid --listen "127.0.0.1:$SKEL_MID_PORT" --upstream "$SIM_URL" & PIDS+=($!); SKEL_MID=$!
"$BIN/skeleton" edge --listen "127.0.0.1:$SKEL_PORT" --mid "http://127.0.0.1:$SKEL_MID_PORT" & PIDS+=($!); SKEL_EDGE=$!
start_pair info "$SCHED_PORT" "$GW_PORT" 100000; PAIR_INFO="$PAIR_PIDS"
start_pair warn "$SCHED_WARN_PORT" "$GW_WARN_PORT" 100000; PAIR_WARN="$PAIR_PIDS"
start_pair info "$SCHED_1T_PORT" "$GW_1T_PORT" 100000 1; PAIR_1T="$PAIR_PIDS"
CHAT=/v1/chat/completions
targets=(--target "direct=$SIM_URL$CHAT" --target "skeleton=http://127.0.0.1:$SKEL_PORT$CHAT"
  --target "pair=http://127.0.0.1:$GW_PORT$CHAT" --target "pair_warn=http://127.0.0.1:$GW_WARN_PORT$CHAT"
  --target "pair_1t=http://127.0.0.1:$GW_1T_PORT$CHAT"
  --pids "direct=$SIM_PID" --pids "skeleton=$SKEL_EDGE,$SKEL_MID" --pids "pair=$PAIR_INFO" --pids "pair_warn=$PAIR_WARN"
  --pids "pair_1t=$PAIR_1T")
for port in "$GW_PORT" "$GW_WARN_PORT" "$GW_1T_PORT"; do wait_chat "http://127.0.0.1:$port$CHAT"; done
note "overhead: phase 1 (instant upstream): interleaved non-stream, interleaved stream, load"
measure interleaved "${targets[@]}" --tag instant --requests "$REQUESTS"
measure interleaved "${targets[@]}" --tag instant --requests "$REQUESTS" --stream
measure load "${targets[@]}" --tag instant --workers "$LOAD_WORKERS" --seconds "$LOAD_SECONDS"
stop_all; PIDS=()

# --- Phase 2: a paced upstream (50 ms TTFT, 20 ms per token) with room for every stream.
start_sim SIM_SLOTS=100000 SIM_TTFT_MS=50 SIM_TPOT_MS=20
"$BIN/skeleton" mid --listen "127.0.0.1:$SKEL_MID_PORT" --upstream "$SIM_URL" & PIDS+=($!); SKEL_MID=$!
"$BIN/skeleton" edge --listen "127.0.0.1:$SKEL_PORT" --mid "http://127.0.0.1:$SKEL_MID_PORT" & PIDS+=($!); SKEL_EDGE=$!
start_pair info "$SCHED_PORT" "$GW_PORT" 100000; PAIR_INFO="$PAIR_PIDS"
start_pair info "$SCHED_1T_PORT" "$GW_1T_PORT" 100000 1; PAIR_1T="$PAIR_PIDS"
direct_skeleton=(--target "direct=$SIM_URL$CHAT" --target "skeleton=http://127.0.0.1:$SKEL_PORT$CHAT"
  --pids "direct=$SIM_PID" --pids "skeleton=$SKEL_EDGE,$SKEL_MID")
pair=(--target "pair=http://127.0.0.1:$GW_PORT$CHAT" --pids "pair=$PAIR_INFO")
pair_1t=(--target "pair_1t=http://127.0.0.1:$GW_1T_PORT$CHAT" --pids "pair_1t=$PAIR_1T")
for port in "$GW_PORT" "$GW_1T_PORT"; do wait_chat "http://127.0.0.1:$port$CHAT"; done
note "overhead: phase 2 (paced upstream): chunk gaps, held streams, $STREAMS concurrent streams"
measure interleaved "${direct_skeleton[@]}" "${pair[@]}" --tag paced --requests "$GAP_REQUESTS" --stream
# Held streams arrive 32 at a time (what an open stream costs); a burst opens all at once.
measure hold "${direct_skeleton[@]}" "${pair[@]}" "${pair_1t[@]}" --tag paced --streams "$STREAMS"
measure hold "${pair[@]}" --tag burst --streams "$STREAMS" --opening-at-once "$STREAMS"
measure load "${direct_skeleton[@]}" "${pair[@]}" "${pair_1t[@]}" --tag paced --workers "$STREAMS" \
  --seconds "$FLOOD_SECONDS" --stream
stop_all; PIDS=()

# --- Phase 3: the seed scenario (an Ollama-like 4 slots), TTFT against workers, for the plot.
start_sim SIM_SLOTS=4 SIM_TTFT_MS=50 SIM_TPOT_MS=20
start_pair info "$SCHED_PORT" "$GW_PORT" 4
wait_chat "http://127.0.0.1:$GW_PORT$CHAT"
note "overhead: phase 3 (seed scenario, 4 slots): TTFT against workers"
for workers in ${SWEEP//,/ }; do
  measure load --target "direct=$SIM_URL$CHAT" --target "pair=http://127.0.0.1:$GW_PORT$CHAT" \
    --tag seed --workers "$workers" --seconds "$SWEEP_SECONDS" --stream
done
stop_all; PIDS=()

# --- Phase 4 (REAL_ENGINE=1): the same sweep against a real engine, llama.cpp with SmolLM2-135M.
if [ "${REAL_ENGINE:-0}" = 1 ]; then
  ENGINE_PORT=$((base + 10)); ENGINE_URL="http://127.0.0.1:$ENGINE_PORT"
  ENGINE_CONFIG="$OUT/real-engine.toml"
  source scripts/lib/smollm2.sh
  smollm2_start "127.0.0.1:$ENGINE_PORT" "$ENGINE_CONFIG"
  PIDS+=("$SMOLLM2_PID")
  SCHEDULER_CONFIG="$ENGINE_CONFIG" start_pair info "$SCHED_PORT" "$GW_PORT" 1
  note "overhead: phase 4 (real engine, llama.cpp + SmolLM2-135M, 1 slot): TTFT against workers"
  ENGINE_SWEEP="${ENGINE_SWEEP:-1,2,4}"
  for workers in ${ENGINE_SWEEP//,/ }; do
    measure load --target "direct=$ENGINE_URL$CHAT" --target "pair=http://127.0.0.1:$GW_PORT$CHAT" \
      --model smollm2 --tag engine --workers "$workers" --seconds "${ENGINE_SECONDS:-20}" --stream
  done
  stop_all; PIDS=()
fi

"$PYTHON" scripts/bench/overhead_report.py "$RESULTS" --markdown "$OUT/overhead.md" --plot "$OUT/overhead.png"

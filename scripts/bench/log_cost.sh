#!/usr/bin/env bash
# What the default log level costs, in instructions — repeatable on a noisy machine, where
# timings are not. Runs gateway and scheduler under `valgrind --tool=callgrind` (counters zeroed
# once warmed up, dumped right after the measured requests), sends the same N non-streamed requests through them to an instant
# llm-sim once at RUST_LOG=info and once at RUST_LOG=warn, and prints instructions per request
# for each service and the ratio info ÷ warn (the target: at most 1.10).
#
#   scripts/bench/log_cost.sh            # builds release binaries, N=200
#   N=50 LLMGW_BIN_DIR=target/debug scripts/bench/log_cost.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N:-200}"
WARMUP="${WARMUP:-20}"
OUT="${OUT:-bench/results}"
if [ -z "${LLMGW_BIN_DIR:-}" ]; then
  cargo build --release --bins --locked -q
  LLMGW_BIN_DIR=target/release
fi
BIN="$LLMGW_BIN_DIR"
PY="$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )"
command -v valgrind >/dev/null || { echo "log_cost: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
mkdir -p "$OUT"
work="$(mktemp -d)"; [ -z "${KEEP:-}" ] || echo "log_cost: keeping $work" >&2
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() { # url, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "log_cost: $1 did not answer in $2 s" >&2; return 1
}

sim_port="$(free_port)"
SIM_LISTEN="127.0.0.1:$sim_port" SIM_INSTANT=true SIM_SLOTS=64 RUST_LOG=warn "$BIN/llm-sim" >"$work/sim.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$sim_port/api/tags" 20

# Sends `count` requests on one keep-alive connection; fails on any non-200.
send() {
  "$PY" - "$1" "$2" <<'PY'
import http.client, json, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
body = json.dumps({"model": "llama3.2", "stream": False, "max_tokens": 8,
                   "messages": [{"role": "user", "content": "how much do logs cost"}]})
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
for _ in range(count):
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
}

# Instructions in a process's explicit dump (the measured window; not start-up or shutdown).
instructions() {
  local file
  file="$(ls "$work"/"$1".out.*.1 2>/dev/null | head -1)"
  [ -n "$file" ] || { echo "log_cost: no callgrind dump for $1" >&2; exit 1; }
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

declare -A cost
for level in info warn; do
  sched_port="$(free_port)"; gw_port="$(free_port)"
  grind=(valgrind --tool=callgrind --quiet)
  RUST_LOG="$level" SCHEDULER_LISTEN="127.0.0.1:$sched_port" SCHEDULER_METRICS_LISTEN="127.0.0.1:$(free_port)" \
    OLLAMA_BASE="http://127.0.0.1:$sim_port" SCHEDULER_MAX_CONCURRENCY=64 \
    "${grind[@]}" --callgrind-out-file="$work/scheduler-$level.out.%p" "$BIN/scheduler" >"$work/scheduler-$level.log" 2>&1 &
  sched_pid=$!; pids+=("$sched_pid")
  RUST_LOG="$level" GATEWAY_LISTEN="127.0.0.1:$gw_port" SCHEDULER_URL="http://127.0.0.1:$sched_port" \
    "${grind[@]}" --callgrind-out-file="$work/gateway-$level.out.%p" "$BIN/gateway" >"$work/gateway-$level.log" 2>&1 &
  gw_pid=$!; pids+=("$gw_pid")
  wait_ok "http://127.0.0.1:$gw_port/readyz" 120
  send "$gw_port" "$WARMUP"
  callgrind_control --zero "$sched_pid" >/dev/null
  callgrind_control --zero "$gw_pid" >/dev/null
  send "$gw_port" "$N"
  callgrind_control --dump "$gw_pid" >/dev/null
  callgrind_control --dump "$sched_pid" >/dev/null
  kill -TERM "$gw_pid" "$sched_pid"
  wait "$gw_pid" "$sched_pid" 2>/dev/null || true
  cost[gateway-$level]=$(( $(instructions "gateway-$level") / N ))
  cost[scheduler-$level]=$(( $(instructions "scheduler-$level") / N ))
done

report="$OUT/log_cost.txt"
{
  echo "instructions per request (callgrind, N=$N non-streamed requests, instant upstream, binaries: $BIN)"
  printf '%-10s %14s %14s %10s\n' service info warn "info/warn"
  for service in gateway scheduler; do
    info="${cost[$service-info]}"; warn="${cost[$service-warn]}"
    printf '%-10s %14d %14d %10s\n' "$service" "$info" "$warn" "$("$PY" -c "print(f'{$info/$warn:.3f}')")"
  done
  info=$(( cost[gateway-info] + cost[scheduler-info] )); warn=$(( cost[gateway-warn] + cost[scheduler-warn] ))
  printf '%-10s %14d %14d %10s\n' both "$info" "$warn" "$("$PY" -c "print(f'{$info/$warn:.3f}')")"
} | tee "$report"

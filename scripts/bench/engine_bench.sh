#!/usr/bin/env bash
# The engine's capacity and cache (engine-scenarios), each pair of gateways differing in one
# setting, in one run:
# - multi-turn: two llm-sims speaking the OpenAI API with a prompt cache of 8 sequences (half the conversations) and
#   1 ms of prefill per uncached prompt word; 16 conversations of 6 turns; one scheduler with
#   `prefix_affinity = true`, one without;
# - backlog: one llm-sim that runs 2 at once (30 tokens × 20 ms each); one scheduler told
#   `slots = 8` (4× too many), one `slots = 2`; a batch backlog of 16 closed-loop clients and
#   a critical request each second.
#   CONVERSATIONS (16)  TURNS (6)  CRITICAL (10)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bins
BIN=target/release
PIDS=()
stop() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
export RUST_LOG="${RUST_LOG:-warn}"
DIR="$(mktemp -d)"
sim() { # port [VAR=value…]
  local port="$1"; shift
  env SIM_LISTEN="127.0.0.1:$port" "$@" "$BIN/llm-sim" >/dev/null 2>&1 & PIDS+=($!)
}
pool() { # name slots extra urls…
  local name="$1" slots="$2" extra="$3"; shift 3
  printf '[[pool]]\nname = "%s"\n%s\n' "$name" "$extra"
  for url in "$@"; do printf '[[pool.endpoint]]\nurl = "%s"\nkind = "openai"\nslots = %s\n' "$url" "$slots"; done
  printf '[[model]]\nname = "llama3.2"\n[[model.version]]\nname = "v"\npool = "%s"\nupstream = "llama3.2"\n' "$name"
}
pair() { # label scheduler-port gateway-port config-file
  SCHEDULER_CONFIG="$4" SCHEDULER_LISTEN="127.0.0.1:$2" SCHEDULER_METRICS_LISTEN="127.0.0.1:$(($2 + 1000))" \
    SCHEDULER_PROBE_INTERVAL_MS=200 SCHEDULER_LOAD_POLL_MS="${POLL:-200}" "$BIN/scheduler" >/dev/null 2>&1 & PIDS+=($!)
  GATEWAY_LISTEN="127.0.0.1:$3" SCHEDULER_URL="http://127.0.0.1:$2" "$BIN/gateway" >/dev/null 2>&1 & PIDS+=($!)
}
ready() { for port in "$@"; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done; }
echo "bench: $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"

echo; echo "## Multi-turn conversations over two engines with a prompt cache"
CACHE=(SIM_PREFIX_CACHE=8 SIM_PREFILL_US_PER_TOKEN=1000 SIM_TTFT_MS=5 SIM_TPOT_MS=5 SIM_OUTPUT_TOKENS=16 SIM_SLOTS=4)
sim 19401 "${CACHE[@]}"; sim 19402 "${CACHE[@]}"
sim 19403 "${CACHE[@]}"; sim 19404 "${CACHE[@]}"
pool gpu 4 "" http://127.0.0.1:19401 http://127.0.0.1:19402 >"$DIR/plain.toml"
pool gpu 4 "prefix_affinity = true" http://127.0.0.1:19403 http://127.0.0.1:19404 >"$DIR/affinity.toml"
pair plain 19451 19481 "$DIR/plain.toml"
pair affinity 19452 19482 "$DIR/affinity.toml"
ready 19481 19482
"$BIN/engine-scenarios" multi-turn --conversations "${CONVERSATIONS:-16}" --turns "${TURNS:-6}" \
  --target "least-loaded=http://127.0.0.1:19481" --target "prefix-affinity=http://127.0.0.1:19482"

echo; echo "## Critical requests under a batch backlog: slots overstated 4× vs honest"
SLOW=(SIM_SLOTS=2 SIM_TTFT_MS=5 SIM_TPOT_MS=20 SIM_OUTPUT_TOKENS=30)
sim 19405 "${SLOW[@]}"; sim 19406 "${SLOW[@]}"
pool gpu 8 "" http://127.0.0.1:19405 >"$DIR/overstated.toml"
pool gpu 2 "" http://127.0.0.1:19406 >"$DIR/honest.toml"
# The overstated pair reads no engine report (SCHEDULER_LOAD_POLL_MS=0): what `slots = 8`
# meant before the engine's own count could lower it.
POLL=0 pair overstated-blind 19453 19483 "$DIR/overstated.toml"
pair honest 19454 19484 "$DIR/honest.toml"
pair overstated-learned 19455 19485 "$DIR/overstated.toml"
ready 19483 19484 19485
"$BIN/engine-scenarios" backlog --critical "${CRITICAL:-10}" \
  --target "slots-8-blind=http://127.0.0.1:19483" --target "slots-2=http://127.0.0.1:19484" \
  --target "slots-8-learned=http://127.0.0.1:19485"

#!/usr/bin/env bash
# Builds and runs the gateway pair locally, no Docker: llm-sim (unless OLLAMA_BASE is set) +
# scheduler + gateway. Ctrl-C stops everything.
#   ENGINE=smollm2   a real model instead of the simulator: llama.cpp serving SmolLM2-135M on the
#                    CPU (prepared once and cached by scripts/test/real_engine_setup.sh; no GPU,
#                    no Ollama); the model is called `smollm2`
#   LLAMA_LISTEN     where that engine listens (default 127.0.0.1:8081)
#   OLLAMA_BASE      use this Ollama instead of the embedded simulator
#   GATEWAY_LISTEN   default 127.0.0.1:8080;  SCHEDULER_LISTEN default 127.0.0.1:50051
#   PROFILE          release (default) or debug
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
export GATEWAY_LISTEN="${GATEWAY_LISTEN:-127.0.0.1:8080}"
export SCHEDULER_LISTEN="${SCHEDULER_LISTEN:-127.0.0.1:50051}"
export SCHEDULER_URL="${SCHEDULER_URL:-http://${SCHEDULER_LISTEN/0.0.0.0/127.0.0.1}}"

if [ "$PROFILE" = release ]; then cargo build --release --bins; else cargo build --bins; fi
bin="target/$PROFILE"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

model=llama3.2
if [ "${ENGINE:-}" = smollm2 ]; then
  LLAMA_LISTEN="${LLAMA_LISTEN:-127.0.0.1:8081}"
  echo "run-local: ENGINE=smollm2, starting llama.cpp with SmolLM2-135M on $LLAMA_LISTEN"
  source scripts/lib/smollm2.sh
  config="$(mktemp -t llmgw-smollm2.XXXXXX.toml)"
  smollm2_start "$LLAMA_LISTEN" "$config"
  pids+=("$SMOLLM2_PID")
  export SCHEDULER_CONFIG="$config"
  model=smollm2
elif [ -z "${OLLAMA_BASE:-}" ]; then
  export SIM_LISTEN="${SIM_LISTEN:-127.0.0.1:11434}"
  export OLLAMA_BASE="http://$SIM_LISTEN"
  echo "run-local: OLLAMA_BASE unset, starting llm-sim on $SIM_LISTEN (set OLLAMA_BASE to use a real Ollama)"
  "$bin/llm-sim" & pids+=($!)
fi
"$bin/scheduler" & pids+=($!)
"$bin/gateway" & pids+=($!)

gateway_url="http://${GATEWAY_LISTEN/0.0.0.0/127.0.0.1}"
for _ in $(seq 1 200); do
  if curl -fsS "$gateway_url/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
if curl -fsS "$gateway_url/readyz" >/dev/null 2>&1; then
  echo "run-local: ready. Try:"
  echo "  curl -sN $gateway_url/v1/chat/completions -H 'content-type: application/json' \\"
  echo "    -d '{\"model\":\"$model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
else
  echo "run-local: gateway not ready yet (is the backend up?); $gateway_url/readyz tells" >&2
fi
wait -n "${pids[@]}"

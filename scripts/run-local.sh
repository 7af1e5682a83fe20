#!/usr/bin/env bash
# Builds and runs the gateway pair locally, no Docker: llm-sim (unless OLLAMA_BASE is set) +
# scheduler + gateway. Ctrl-C stops everything.
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

if [ -z "${OLLAMA_BASE:-}" ]; then
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
  echo "    -d '{\"model\":\"llama3.2\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
else
  echo "run-local: gateway not ready yet (is the backend at $OLLAMA_BASE up?); $gateway_url/readyz tells" >&2
fi
wait -n "${pids[@]}"

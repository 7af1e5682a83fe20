# Sourced by scripts/run-local.sh and scripts/bench/overhead.sh (run from the repository root):
# the real engine both can put behind the pair — llama.cpp serving SmolLM2-135M on the CPU as
# model `smollm2` — and the scheduler config that routes to it.
#
# smollm2_start HOST:PORT CONFIG_FILE
#   prepares the engine (once per machine, cached by scripts/test/real_engine_setup.sh), starts
#   it in the background (pid in SMOLLM2_PID), waits until it answers, writes CONFIG_FILE.
smollm2_start() {
  local listen=$1 config=$2 engine_env
  # An assignment, not `eval "$(…)"`: a failed setup must stop the caller.
  engine_env="$(bash scripts/test/real_engine_setup.sh)" || return 1
  eval "$engine_env"
  "$LLMGW_LLAMA_PYTHON" -m llama_cpp.server --model "$LLMGW_LLAMA_MODEL" --model_alias smollm2 \
    --host "${listen%:*}" --port "${listen##*:}" --n_ctx 2048 --interrupt_requests False \
    >/dev/null 2>&1 &
  SMOLLM2_PID=$!
  for _ in $(seq 1 600); do curl -fsS "http://$listen/v1/models" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS -o /dev/null "http://$listen/v1/models" || {
    echo "smollm2: llama.cpp did not answer on $listen" >&2
    kill "$SMOLLM2_PID" 2>/dev/null
    return 1
  }
  cat >"$config" <<TOML
# One llama.cpp endpoint with one slot, serving model \`smollm2\` (scripts/lib/smollm2.sh).
[[pool]]
name = "cpu"
[[pool.endpoint]]
url = "http://$listen/v1"
kind = "openai"
slots = 1
schema_format = "json_object_schema"

[[model]]
name = "smollm2"
[model.timeouts]
ttft_ms = 60000
[[model.version]]
name = "q4"
pool = "cpu"
upstream = "smollm2"
TOML
}

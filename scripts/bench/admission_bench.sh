#!/usr/bin/env bash
# Admission scenarios against llm-sim with slot emulation (4 slots, ~0.78 s per request, so
# direct capacity ≈ 5 req/s like the seed's Ollama): the seed's workers sweep (TTFT of admitted
# requests, direct vs gateway), then 3x overload, tenant fairness, priority classes, refusal
# latency and disconnect-to-reuse, each against its target.
#   SECONDS_PER_POINT (sweep window, default 5)  SCENARIO_SECONDS (loaded windows, default 20)
#   SWEEP=0 skips the workers sweep
# The work-aware rows (token shares, long prompts, objectives, predictions) need prefill time
# per prompt word (1 ms) and a 1 s first-token budget, set here.
set -euo pipefail
export SIM_PREFILL_US_PER_TOKEN="${SIM_PREFILL_US_PER_TOKEN:-1000}"
export SCHEDULER_TTFT_TIMEOUT_MS="${SCHEDULER_TTFT_TIMEOUT_MS:-1000}"
export SIM_SLOTS="${SIM_SLOTS:-4}" SIM_TTFT_MS="${SIM_TTFT_MS:-200}" SIM_TPOT_MS="${SIM_TPOT_MS:-20}"
export SIM_OUTPUT_TOKENS="${SIM_OUTPUT_TOKENS:-30}"
export SCHEDULER_MAX_CONCURRENCY="${SCHEDULER_MAX_CONCURRENCY:-$SIM_SLOTS}"
export SCHEDULER_MAX_QUEUE="${SCHEDULER_MAX_QUEUE:-16}"
source "$(dirname "$0")/stack.sh"
echo "bench: scheduler max_queue=$SCHEDULER_MAX_QUEUE"
if [ "${SWEEP:-1}" != 0 ]; then
echo
echo "## Seed scenario: streamed TTFT of admitted requests (refused workers honour Retry-After)"
"$BIN/llmgw-bench" --stream --max-tokens "$SIM_OUTPUT_TOKENS" --workers "${WORKERS:-1,4,8,16,32}" \
  --seconds "${SECONDS_PER_POINT:-5}" \
  --target "direct=$SIM_URL/v1/chat/completions" --target "gateway=$GW_URL/v1/chat/completions"
fi
echo
echo "## Admission scenarios"
"$BIN/admission-scenarios" --gateway "$GW_URL" --direct "$SIM_URL" --slots "$SIM_SLOTS" \
  --seconds "${SCENARIO_SECONDS:-20}" --max-tokens "$SIM_OUTPUT_TOKENS" \
  --scheduler-metrics "http://127.0.0.1:${METRICS_PORT:-18464}/metrics"

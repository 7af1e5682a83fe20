#!/usr/bin/env bash
# Non-streamed completions, workers sweep: RPS and latency percentiles, direct to llm-sim (the
# baseline), through the zero-logic skeleton of the same two hops (the architecture's floor), and
# through gateway + scheduler, interleaved in one run. Ratios are against direct.
#   WORKERS (default 1,4,16,32)  SECONDS per window (default 5)
#   SIM_* / SCHEDULER_* tune the upstream (default: 4 slots, 50 ms TTFT, 20 ms/token, 16 tokens)
#   SIM_INSTANT=true  measures pure overhead (no upstream delay; give SIM_SLOTS and
#                     SCHEDULER_MAX_CONCURRENCY the same large value, e.g. 256)
set -euo pipefail
source "$(dirname "$0")/stack.sh"
"$BIN/llmgw-bench" --workers "${WORKERS:-1,4,16,32}" --seconds "${SECONDS_PER_POINT:-5}" \
  --target "direct=$SIM_URL/v1/chat/completions" --target "skeleton=$SKEL_URL/v1/chat/completions" \
  --target "gateway=$GW_URL/v1/chat/completions"

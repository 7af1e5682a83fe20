#!/usr/bin/env bash
# Streamed completions, workers sweep: time to first token percentiles and RPS, direct to
# llm-sim (baseline) vs through gateway + scheduler, interleaved in one run.
#   Same knobs as no_stream_bench.sh.
set -euo pipefail
source "$(dirname "$0")/stack.sh"
"$BIN/llmgw-bench" --stream --workers "${WORKERS:-1,4,16,32}" --seconds "${SECONDS_PER_POINT:-5}" \
  --target "direct=$SIM_URL/v1/chat/completions" --target "gateway=$GW_URL/v1/chat/completions"

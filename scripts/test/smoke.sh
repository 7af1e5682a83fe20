#!/usr/bin/env bash
# Smoke test against a running gateway: liveness, one non-streamed and one streamed completion.
#   BASE_URL (default http://localhost:8080), MODEL (default llama3.2)
set -euo pipefail
BASE_URL="${BASE_URL:-http://localhost:8080}"
MODEL="${MODEL:-llama3.2}"
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

health=$(curl -fsS "$BASE_URL/healthz") || fail "/healthz unreachable"
[ "$health" = "OK" ] || fail "/healthz said '$health'"
echo "smoke: /healthz OK"

body=$(printf '{"model":"%s","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' "$MODEL")
answer=$(curl -fsS "$BASE_URL/v1/chat/completions" -H 'content-type: application/json' -d "$body") \
  || fail "non-stream request failed"
python3 - "$answer" <<'PY' || fail "non-stream answer malformed: $answer"
import json, sys
reply = json.loads(sys.argv[1])
content = reply["choices"][0]["message"]["content"]
assert content.strip(), "empty content"
assert reply["usage"]["completion_tokens"] > 0, "no usage"
print(f"smoke: non-stream OK ({reply['usage']['completion_tokens']} tokens): {content[:60]!r}")
PY

stream_body=$(printf '{"model":"%s","stream":true,"messages":[{"role":"user","content":"Count to five."}],"max_tokens":32}' "$MODEL")
events=$(curl -fsSN "$BASE_URL/v1/chat/completions" -H 'content-type: application/json' -d "$stream_body") \
  || fail "stream request failed"
python3 - "$events" <<'PY' || fail "stream malformed"
import json, sys
lines = [l[len("data: "):] for l in sys.argv[1].splitlines() if l.startswith("data: ")]
assert lines and lines[-1] == "[DONE]", "stream did not end with [DONE]"
chunks = [json.loads(l) for l in lines[:-1]]
text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
assert text.strip(), "no streamed content"
print(f"smoke: stream OK ({len(chunks)} chunks): {text[:60]!r}")
PY
echo "smoke: all checks passed"

"""The official `ollama` Python package pointed at the gateway: chat (streamed and not),
generate, embed and list give the same answers as the same calls made directly to the engine
(llm-sim's Ollama API), through keys, limits, queueing and traces like every other route; model
management is refused; with API keys, a missing or wrong key is the client's own error."""

import ollama
import pytest

from conftest import SIM_OUTPUT_TOKENS
from test_governance import governed, new_key  # noqa: F401  (the keyed gateway fixture)

MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def through(stack):
    return ollama.Client(host=stack.gateway_url)


@pytest.fixture(scope="module")
def direct(stack):
    return ollama.Client(host=stack.sim_url)


def test_chat_equals_the_engines_answer(through, direct):
    want = direct.chat(model="llama3.2", messages=MESSAGES, options={"seed": 5})
    got = through.chat(model="llama3.2", messages=MESSAGES, options={"seed": 5})
    assert got.message.role == "assistant"
    assert got.message.content == want.message.content
    assert got.done and got.done_reason == "stop"
    assert (got.prompt_eval_count, got.eval_count) == (want.prompt_eval_count, want.eval_count)

    parts = list(through.chat(model="llama3.2", messages=MESSAGES, options={"seed": 5}, stream=True))
    assert "".join(p.message.content for p in parts) == want.message.content
    assert [p.done for p in parts] == [False] * SIM_OUTPUT_TOKENS + [True]
    assert parts[-1].eval_count == SIM_OUTPUT_TOKENS


def test_chat_log_probabilities_equal_the_engines(through, direct):
    """`logprobs`/`top_logprobs` (ollama 0.12.11+ and this client): the same entries as the
    engine gives the same call directly, whole and streamed."""
    ask = dict(model="llama3.2", messages=MESSAGES, options={"seed": 5}, logprobs=True, top_logprobs=2)
    want = direct.chat(**ask)
    got = through.chat(**ask)
    assert len(want.logprobs) == SIM_OUTPUT_TOKENS
    assert [(e.token, e.logprob) for e in got.logprobs] == [(e.token, e.logprob) for e in want.logprobs]
    assert all(len(e.top_logprobs) == 2 for e in got.logprobs)
    streamed = [e for part in through.chat(**ask, stream=True) for e in (part.logprobs or [])]
    assert [e.token for e in streamed] == [e.token for e in want.logprobs]


def test_generate_embed_and_list_equal_the_engines(through, direct):
    want = direct.generate(model="llama3.2", prompt="Once upon a time", raw=True, options={"num_predict": 4})
    got = through.generate(model="llama3.2", prompt="Once upon a time", raw=True, options={"num_predict": 4})
    assert got.response == want.response and got.done_reason == "length"
    streamed = "".join(p.response for p in through.generate(model="llama3.2", prompt="Once upon a time",
                                                            raw=True, stream=True))
    assert streamed == direct.generate(model="llama3.2", prompt="Once upon a time", raw=True).response

    inputs = ["the cat", "a dog barks"]
    for mine, theirs in zip(through.embed(model="llama3.2", input=inputs).embeddings,
                            direct.embed(model="llama3.2", input=inputs).embeddings):
        assert mine == pytest.approx(theirs, rel=1e-6)

    assert {m.model for m in through.list().models} == {m.model for m in direct.list().models}


def test_model_management_is_refused(through):
    with pytest.raises(ollama.ResponseError) as refused:
        through.pull("llama3.2")
    assert refused.value.status_code == 403
    assert "model management" in refused.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        through.delete("llama3.2")
    assert refused.value.status_code == 403


def test_a_missing_or_wrong_key_is_the_clients_own_error(governed):  # noqa: F811
    stack, keys = governed
    for headers in [{}, {"Authorization": f"Bearer {new_key('wrong')}"}]:
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=stack.gateway_url, headers=headers).chat(model="llama3.2", messages=MESSAGES)
        assert refused.value.status_code == 401
        assert isinstance(refused.value.error, str) and "key" in refused.value.error.lower()
    # The right key: the tenant's own cap (max_tokens = 5) applies to Ollama's num_predict too.
    keyed = ollama.Client(host=stack.gateway_url, headers={"Authorization": f"Bearer {keys['a']}"})
    answer = keyed.chat(model="llama3.2", messages=MESSAGES, options={"num_predict": 50})
    assert answer.eval_count == 5 and answer.done_reason == "length"

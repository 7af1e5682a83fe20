"""llama.cpp's OpenAI-compatible server (llama-cpp-python) in embedding mode with mean pooling.

A chat model's GGUF (SmolLM2) declares no pooling, so the stock server answers /v1/embeddings
with one vector per token; the server has no flag for pooling, the Llama class does. This sets
that default and starts the unchanged server: same arguments as `python -m llama_cpp.server`."""

import functools

import llama_cpp
from llama_cpp.server.__main__ import main

_original_init = llama_cpp.Llama.__init__


@functools.wraps(_original_init)
def _mean_pooled(self, *args, **kwargs):
    kwargs.setdefault("pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    _original_init(self, *args, **kwargs)


llama_cpp.Llama.__init__ = _mean_pooled

if __name__ == "__main__":
    main()

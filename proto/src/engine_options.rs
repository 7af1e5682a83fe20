//! The engine options a request may carry in `extra_json`: an allow-list per backend protocol,
//! never a deny-list. Engines read fields we do not know (llama.cpp's server reads `n_predict`
//! ahead of `max_tokens`, `id_slot` picks its slot, `cache_prompt` its cache; Ollama's
//! `num_ctx` and `num_gpu` reload the model for everyone), so only sampling knobs that change
//! nothing but the one answer pass. The gateway refuses any other name with a 400 naming it,
//! and a tenant's `allowed_options` narrows the list further; the scheduler holds direct gRPC
//! callers to the same list and sends each protocol only its own names.

/// Sampling knobs both protocols take (Ollama `options`, llama.cpp's server, vLLM, SGLang).
const SHARED: &[&str] = &[
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "tfs_z",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
];

/// Ollama's `options` beyond the shared ones.
const OLLAMA_ONLY: &[&str] = &["penalize_newline"];

/// OpenAI-compatible request fields beyond the shared ones (vLLM's and the OpenAI API's).
const OPENAI_ONLY: &[&str] = &[
    "repetition_penalty",
    "logit_bias",
    "user",
    "parallel_tool_calls",
    "reasoning_effort",
];

/// The backend protocols, for [`passes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineProtocol {
    Ollama,
    OpenAi,
}

/// Whether `name` is an engine option some protocol takes.
pub fn is_engine_option(name: &str) -> bool {
    SHARED.contains(&name) || OLLAMA_ONLY.contains(&name) || OPENAI_ONLY.contains(&name)
}

/// Whether `name` is sent to an engine of `protocol` (others are left out for it).
pub fn passes(protocol: EngineProtocol, name: &str) -> bool {
    SHARED.contains(&name)
        || match protocol {
            EngineProtocol::Ollama => OLLAMA_ONLY.contains(&name),
            EngineProtocol::OpenAi => OPENAI_ONLY.contains(&name),
        }
}

/// Every engine option, for error messages and documentation.
pub fn all() -> impl Iterator<Item = &'static str> {
    SHARED.iter().chain(OLLAMA_ONLY).chain(OPENAI_ONLY).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_pass_and_what_changes_more_than_the_answer_does_not() {
        assert!(is_engine_option("top_k"));
        assert!(passes(EngineProtocol::Ollama, "top_k"));
        assert!(passes(EngineProtocol::OpenAi, "logit_bias"));
        assert!(!passes(EngineProtocol::Ollama, "logit_bias"));
        for refused in [
            "n_predict",
            "id_slot",
            "cache_prompt",
            "num_ctx",
            "num_gpu",
            "keep_alive",
        ] {
            assert!(!is_engine_option(refused), "{refused}");
        }
    }
}

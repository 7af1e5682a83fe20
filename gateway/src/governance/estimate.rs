//! The prompt-token estimate a reservation is made with, before the engine reports the real
//! count. Where a `[[tokenizer]]` (a Hugging Face `tokenizer.json`) is configured for the model,
//! the text the engine will tokenize (message contents, names, tool-call arguments, tool
//! schemas) is counted with it; otherwise the estimate is `ceil(bytes / prompt_bytes_per_token)`
//! over that text. Either way 8 tokens per message and 8 for the reply's opening are added for
//! chat-template markers. With the byte heuristic's default of 1 byte per token this is an upper
//! bound for byte-level BPE tokenizers (each token covers at least one byte), so reservations
//! never undercount; settlement then refunds the difference.

use std::sync::Arc;

use llmgw_proto::v1::ChatRequest;
use tokenizers::Tokenizer;

use super::config::TokenizerConfig;
use super::policy::glob_matches;

/// The configured tokenizers, by model glob.
#[derive(Debug, Default)]
pub struct Tokenizers(Vec<(Vec<String>, Arc<Tokenizer>)>);

impl Tokenizers {
    /// Loads every `[[tokenizer]]` file; the error names the entry.
    pub fn load(configs: &[TokenizerConfig]) -> Result<Self, String> {
        configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                Tokenizer::from_file(&config.file)
                    .map(|tokenizer| (config.models.clone(), Arc::new(tokenizer)))
                    .map_err(|err| format!("`tokenizer[{i}].file` ({}): {err}", config.file))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The tokenizer for `model`, if one is configured.
    pub fn for_model(&self, model: &str) -> Option<&Arc<Tokenizer>> {
        self.0
            .iter()
            .find(|(globs, _)| globs.iter().any(|glob| glob_matches(glob, model)))
            .map(|(_, tokenizer)| tokenizer)
    }
}

/// Template tokens per message (role markers, separators).
const PER_MESSAGE: u64 = 8;
/// Template tokens of the assistant's opening.
const PER_REQUEST: u64 = 8;

/// The pieces of a chat the engine tokenizes.
pub fn chat_texts(request: &ChatRequest) -> Vec<&str> {
    let messages = request.messages.iter().flat_map(|message| {
        [
            message.role.as_str(),
            message.name.as_str(),
            message.content.as_str(),
        ]
        .into_iter()
        .chain(
            message
                .tool_calls
                .iter()
                .flat_map(|call| [call.name.as_str(), call.arguments_json.as_str()]),
        )
    });
    let tools = request.tools.iter().flat_map(|tool| {
        [
            tool.name.as_str(),
            tool.description.as_str(),
            tool.parameters_json.as_str(),
        ]
    });
    messages
        .chain(tools)
        .filter(|text| !text.is_empty())
        .collect()
}

/// Estimated prompt tokens of `texts` in `messages` chat messages (each adds template tokens;
/// 0 for a completion or embeddings): counted by `tokenizer` when there is one, else by bytes.
pub fn prompt_tokens(
    texts: &[&str],
    messages: usize,
    tokenizer: Option<&Tokenizer>,
    bytes_per_token: f64,
) -> u64 {
    let by_bytes = |text: &str| (text.len() as f64 / bytes_per_token.max(1.0)).ceil() as u64;
    let text: u64 = match tokenizer {
        Some(tokenizer) => texts
            .iter()
            .map(|text| match tokenizer.encode(*text, false) {
                Ok(encoding) => encoding.len() as u64,
                // A text the tokenizer cannot take is still counted, by bytes.
                Err(_) => by_bytes(text),
            })
            .sum(),
        None => {
            let bytes: usize = texts.iter().map(|text| text.len()).sum();
            (bytes as f64 / bytes_per_token.max(1.0)).ceil() as u64
        }
    };
    text + PER_MESSAGE * messages as u64 + PER_REQUEST
}

/// Prompts longer than this are tokenized on the blocking pool: a 4 MiB prompt takes a
/// tokenizer tens of milliseconds, which must not stall every other request on the runtime.
const INLINE_TOKENIZE_BYTES: usize = 16 << 10;

/// Turns for tokenizing long prompts, one per core.
fn tokenizing() -> &'static Arc<tokio::sync::Semaphore> {
    static TURNS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Arc::new(tokio::sync::Semaphore::new(cores))
    })
}

/// [`prompt_tokens`], with a long prompt's tokenizing moved off the async runtime.
pub async fn prompt_tokens_off_runtime(
    texts: &[&str],
    messages: usize,
    tokenizer: Option<&Arc<Tokenizer>>,
    bytes_per_token: f64,
) -> u64 {
    let bytes: usize = texts.iter().map(|text| text.len()).sum();
    let Some(tokenizer) = tokenizer.filter(|_| bytes > INLINE_TOKENIZE_BYTES) else {
        return prompt_tokens(texts, messages, tokenizer.map(Arc::as_ref), bytes_per_token);
    };
    // As many long prompts tokenized at once as there are cores; the rest wait their turn
    // (and a client that leaves while waiting costs nothing more).
    let Ok(turn) = Arc::clone(tokenizing()).acquire_owned().await else {
        return prompt_tokens(texts, messages, None, 1.0);
    };
    let owned: Vec<String> = texts.iter().map(|text| (*text).to_owned()).collect();
    let tokenizer = Arc::clone(tokenizer);
    let counted = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
        prompt_tokens(&texts, messages, Some(&tokenizer), bytes_per_token)
    })
    .await;
    // The blocking pool failed us: one token per byte is an upper bound for byte-level BPE.
    counted.unwrap_or_else(|_| prompt_tokens(texts, messages, None, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::Message;

    #[test]
    fn counts_bytes_and_template_overhead() {
        let request = ChatRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hello world".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            prompt_tokens(&chat_texts(&request), 1, None, 1.0),
            15 + 8 + 8
        );
        assert_eq!(
            prompt_tokens(&chat_texts(&request), 1, None, 4.0),
            4 + 8 + 8
        );
    }

    /// A word-level tokenizer.json: whitespace-split words, unknown ones as `[UNK]`.
    pub const WORD_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,
        "added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},
        "post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;

    #[test]
    fn a_configured_tokenizer_counts_exactly_for_its_models() {
        let path = std::env::temp_dir().join(format!("llmgw-tok-{}.json", fastrand::u64(..)));
        std::fs::write(&path, WORD_TOKENIZER).unwrap();
        let tokenizers = Tokenizers::load(&[TokenizerConfig {
            models: vec!["llama*".into()],
            file: path.display().to_string(),
        }])
        .unwrap();
        let request = ChatRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hello big world".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let tokenizer = tokenizers.for_model("llama3.2");
        assert!(tokenizers.for_model("qwen").is_none());
        // "user" → 1, "hello big world" → 3; plus one message and the reply's opening.
        assert_eq!(
            prompt_tokens(&chat_texts(&request), 1, tokenizer.map(Arc::as_ref), 1.0),
            4 + 8 + 8
        );
        let missing = Tokenizers::load(&[TokenizerConfig {
            models: vec!["x".into()],
            file: "/nonexistent/tokenizer.json".into(),
        }])
        .unwrap_err();
        assert!(missing.contains("`tokenizer[0].file`"), "{missing}");
        let _ = std::fs::remove_file(path);
    }
}

//! Deterministic text: the completion is a pure function of (prompt, seed, length).

const VOCABULARY: [&str; 32] = [
    "the", "gateway", "streams", "tokens", "quickly", "and", "every", "request", "waits", "its",
    "turn", "while", "slots", "stay", "busy", "until", "a", "model", "answers", "with", "care",
    "so", "tenants", "share", "fairly", "under", "load", "without", "losing", "work", "today",
    "again",
];

/// The tokens the simulator emits for `prompt` and `seed`: the first bare, the rest with a
/// leading space, so that concatenating them gives [`completion_text`].
pub fn completion_tokens(prompt: &str, seed: u64, count: usize) -> Vec<String> {
    let mut state = fnv1a(prompt.as_bytes()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|index| {
            let word = VOCABULARY[(splitmix64(&mut state) % VOCABULARY.len() as u64) as usize];
            if index == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// The whole completion for `prompt` and `seed` with `count` tokens.
pub fn completion_text(prompt: &str, seed: u64, count: usize) -> String {
    completion_tokens(prompt, seed, count).concat()
}

/// Prompt length as the simulator counts it: whitespace-separated words, at least one.
pub fn prompt_tokens(prompt: &str) -> usize {
    prompt.split_whitespace().count().max(1)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_text_different_inputs_differ() {
        assert_eq!(completion_text("hi", 1, 8), completion_text("hi", 1, 8));
        assert_ne!(completion_text("hi", 1, 8), completion_text("hi", 2, 8));
        assert_ne!(completion_text("hi", 1, 8), completion_text("hello", 1, 8));
        assert_eq!(completion_text("hi", 1, 8).split(' ').count(), 8);
        assert!(completion_text("hi", 1, 8).starts_with(&completion_text("hi", 1, 3)));
    }

    #[test]
    fn prompt_tokens_counts_words() {
        assert_eq!(prompt_tokens("say hello world"), 3);
        assert_eq!(prompt_tokens(""), 1);
    }
}

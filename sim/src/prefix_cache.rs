//! [`PrefixCache`]: the engine's prompt cache, as llama.cpp and vLLM keep one — the last few
//! sequences (prompt and completion) it computed, in words. A new prompt that starts with one
//! of them needs no prefill for the shared words: `SIM_PREFILL_US_PER_TOKEN` is paid only for
//! the rest, and the OpenAI usage reports them as `prompt_tokens_details.cached_tokens`.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// The sequences kept, most recent first; `capacity` 0 keeps none.
#[derive(Debug, Default)]
pub struct PrefixCache {
    sequences: VecDeque<Vec<u64>>,
    capacity: usize,
}

/// A word's identity in the cache.
fn word_hash(word: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    word.hash(&mut hasher);
    hasher.finish()
}

/// The words of `text` as the cache compares them.
pub fn words(text: &str) -> Vec<u64> {
    text.split_whitespace().map(word_hash).collect()
}

impl PrefixCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            sequences: VecDeque::new(),
            capacity,
        }
    }

    /// How many leading words of `prompt` are cached; then keeps `sequence` (the prompt and
    /// what will be generated for it) as the most recent entry, replacing the one it extends.
    pub fn take(&mut self, prompt: &[u64], sequence: Vec<u64>) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        let shared = |cached: &Vec<u64>| {
            cached
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let best = self
            .sequences
            .iter()
            .enumerate()
            .map(|(at, cached)| (shared(cached), at))
            .max();
        let cached = best.map_or(0, |(words, _)| words);
        // The entry that matched at least half of itself is extended (the sequence it holds
        // goes on); a weaker match leaves it, as llama.cpp's slot prompt similarity of 0.5.
        if let Some((words, at)) = best
            && words > 0
            && words * 2 >= self.sequences[at].len()
        {
            self.sequences.remove(at);
        }
        self.sequences.push_front(sequence);
        self.sequences.truncate(self.capacity);
        cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_reuses_its_previous_turn_and_the_cache_is_bounded() {
        let mut cache = PrefixCache::new(2);
        let first = words("system: be brief\nuser: hello");
        let answer = words("system: be brief\nuser: hello\nhi there");
        assert_eq!(cache.take(&first, answer), 0);
        let second = words("system: be brief\nuser: hello\nhi there\nuser: and now?");
        assert_eq!(
            cache.take(&second, second.clone()),
            7,
            "the whole first turn"
        );
        let other = words("system: be brief\nuser: something else");
        // The entry it matched is overwritten, as an engine reuses the slot that matched.
        assert_eq!(
            cache.take(&other, other.clone()),
            4,
            "the shared system prompt"
        );
        cache.take(&words("alpha beta"), words("alpha beta"));
        cache.take(&words("gamma delta"), words("gamma delta"));
        assert_eq!(
            cache.take(&other, other.clone()),
            0,
            "evicted: two entries only"
        );
        assert_eq!(PrefixCache::new(0).take(&first, first.clone()), 0);
    }
}

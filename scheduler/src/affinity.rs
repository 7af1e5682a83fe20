//! Prefix affinity with bounded load: a conversation goes back to the endpoint that served
//! its beginning, whose engine still holds that prefix in its cache (llama.cpp, vLLM, SGLang
//! and Ollama all reuse a cached prefix), unless that endpoint is too loaded.
//!
//! - **Prefix blocks.** A request's text (each message's role and content, in order) is cut in
//!   [`BLOCK`]-byte blocks and hashed as a chain: block k's hash covers everything before it.
//!   The next turn of a conversation starts with the same bytes, so it shares those hashes.
//! - **The table** maps a block hash to the endpoint that served it last, bounded to
//!   [`TABLE_ENTRIES`] per pool (oldest first out). A request records its first
//!   [`RECORDED_BLOCKS`] blocks (shared system prompts) and its deepest one (the conversation).
//! - **Bounded load** (consistent hashing with bounded loads, Mirrokni et al. 2018): the
//!   endpoint found is used while it has a free slot, or, with this request, its load stays
//!   within `(1 + ε)` × the pool's average, counted in requests per slot and rounded up; else
//!   the usual choice (least loaded) stands — affinity never piles a hot conversation onto one
//!   engine, and never leaves a cache for a colder one while its engine has room.
//!
//! The table lives in its pool: a restart forgets it, and so does a reload that changes the
//! pool's settings (an unchanged pool keeps it).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::work::Work;

/// Bytes per prefix block.
pub const BLOCK: usize = 256;
/// Leading blocks a request records (a shared system prompt), besides its deepest.
pub const RECORDED_BLOCKS: usize = 64;
/// Entries per pool's table.
pub const TABLE_ENTRIES: usize = 65_536;

/// The chain hashes of a request's complete prefix blocks, shortest prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixKey(Vec<u64>);

/// The prefix blocks of `work`'s text (chats and completions; embeddings have none).
pub fn prefix_key(work: &Work) -> PrefixKey {
    let mut chain = Chain::default();
    match work {
        Work::Chat(chat) => {
            for message in &chat.messages {
                chain.feed(message.role.as_bytes());
                chain.feed(&[0x1f]);
                chain.feed(message.content.as_bytes());
                chain.feed(&[0x1e]);
            }
        }
        Work::Completion(completion) => chain.feed(completion.prompt.as_bytes()),
        Work::Embedding(_) => {}
    }
    PrefixKey(chain.blocks)
}

/// Cuts bytes in blocks and hashes each with all that came before.
#[derive(Debug, Default)]
struct Chain {
    pending: Vec<u8>,
    last: u64,
    blocks: Vec<u64>,
}

impl Chain {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (BLOCK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == BLOCK {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                self.last.hash(&mut hasher);
                self.pending.hash(&mut hasher);
                self.last = hasher.finish();
                self.blocks.push(self.last);
                self.pending.clear();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    /// Block hash → (endpoint index, stamp of its latest record).
    served_by: HashMap<u64, (usize, u64)>,
    /// Records, oldest first, to evict by.
    order: VecDeque<(u64, u64)>,
    stamp: u64,
}

/// One pool's affinity table and its load bound.
#[derive(Debug)]
pub struct Affinity {
    epsilon: f64,
    table: Mutex<Table>,
}

impl Affinity {
    pub fn new(epsilon: f64) -> Self {
        Self {
            epsilon,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint that served the longest known prefix of `key`, and how many blocks long.
    pub fn lookup(&self, key: &PrefixKey) -> Option<(usize, usize)> {
        let table = self.table();
        key.0
            .iter()
            .enumerate()
            .rev()
            .find_map(|(depth, hash)| table.served_by.get(hash).map(|(at, _)| (*at, depth + 1)))
    }

    /// `endpoint` served `key`: its leading blocks and its deepest now point there.
    pub fn record(&self, key: &PrefixKey, endpoint: usize) {
        let Some(deepest) = key.0.last() else {
            return;
        };
        let mut table = self.table();
        let beyond = (key.0.len() > RECORDED_BLOCKS).then_some(deepest);
        let hashes = key.0.iter().take(RECORDED_BLOCKS).chain(beyond);
        for hash in hashes {
            table.stamp += 1;
            let stamp = table.stamp;
            table.served_by.insert(*hash, (endpoint, stamp));
            table.order.push_back((*hash, stamp));
        }
        while table.served_by.len() > TABLE_ENTRIES || table.order.len() > 2 * TABLE_ENTRIES {
            let Some((hash, stamp)) = table.order.pop_front() else {
                break;
            };
            // Only the latest record of a hash removes it.
            if table
                .served_by
                .get(&hash)
                .is_some_and(|(_, latest)| *latest == stamp)
            {
                table.served_by.remove(&hash);
            }
        }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.table().served_by.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one more request on an endpoint with `outstanding` of `slots` fits a free slot
    /// or keeps it within `(1 + ε)` × the average load of a pool with `total_outstanding` of
    /// `total_slots` (requests per slot, rounded up to whole requests).
    pub fn within_bound(
        &self,
        (outstanding, slots): (usize, usize),
        (total_outstanding, total_slots): (usize, usize),
    ) -> bool {
        let average = (total_outstanding + 1) as f64 / total_slots.max(1) as f64;
        let allowed = ((1.0 + self.epsilon) * average * slots.max(1) as f64).ceil();
        outstanding < slots || (outstanding + 1) as f64 <= allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{ChatRequest, Message};

    fn chat(turns: &[&str]) -> Work {
        Work::Chat(ChatRequest {
            messages: turns
                .iter()
                .enumerate()
                .map(|(i, content)| Message {
                    role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
                    content: (*content).to_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn the_next_turn_finds_the_endpoint_that_served_the_conversation() {
        let long = "x".repeat(1000);
        let first = prefix_key(&chat(&[&long]));
        assert_eq!(first.0.len(), (4 + 1 + 1000 + 1) / BLOCK);
        let affinity = Affinity::new(0.25);
        affinity.record(&first, 1);
        let next = prefix_key(&chat(&[&long, "an answer", "and a question"]));
        assert_eq!(affinity.lookup(&next), Some((1, first.0.len())));
        let other = prefix_key(&chat(&["y".repeat(1000).as_str()]));
        assert_eq!(affinity.lookup(&other), None);
        assert_eq!(
            prefix_key(&chat(&["short"])).0.len(),
            0,
            "no complete block"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let affinity = Affinity::new(0.25);
        for n in 0..(TABLE_ENTRIES + 10) {
            affinity.record(&PrefixKey(vec![n as u64]), 0);
        }
        assert_eq!(affinity.len(), TABLE_ENTRIES);
        assert_eq!(
            affinity.lookup(&PrefixKey(vec![0])),
            None,
            "the oldest went first"
        );
    }

    #[test]
    fn load_stays_within_one_plus_epsilon_of_the_average() {
        let affinity = Affinity::new(0.25);
        // Two endpoints of 4 slots, all idle: the first request may go anywhere.
        assert!(affinity.within_bound((0, 4), (0, 8)));
        // A free slot on the target: it stays, however the others are loaded.
        assert!(affinity.within_bound((3, 4), (3, 8)));
        // Full, 5 of 8 in all: (4 + 1) ≤ ⌈1.25 × 6/8 × 4⌉ = 4? No.
        assert!(!affinity.within_bound((4, 4), (5, 8)));
        // Full, but so is every other: ⌈1.25 × 17/16 × 4⌉ = 6.
        assert!(affinity.within_bound((4, 4), (16, 16)));
    }
}

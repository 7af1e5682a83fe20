//! What `x-llmgw-backend` tells a client about the endpoint that served it: the protocol and a
//! short keyed hash of the endpoint's URL (`ollama-1a2b3c4d`). Stable and distinct per endpoint,
//! so a client or an operator can tell replicas apart; it reveals no internal host or port, and
//! cannot be reversed by hashing guessed addresses: the key is the deployment's scheduler token
//! (the same on every gateway, so labels agree across them), or without one a random key of
//! this process.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};

use sha2::{Digest, Sha256};

/// Labels already computed: a fleet has few endpoints, and hashing one costs more than the rest
/// of the response head. Bounded, since the names come from schedulers.
static KNOWN: RwLock<Option<HashMap<String, Arc<str>>>> = RwLock::new(None);
const KNOWN_AT_MOST: usize = 1024;

/// The public label of the scheduler's endpoint name (`kind@url`).
pub fn public(endpoint: &str) -> Arc<str> {
    let known = KNOWN
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(label) = known.as_ref().and_then(|labels| labels.get(endpoint)) {
        return Arc::clone(label);
    }
    drop(known);
    let label: Arc<str> = label(endpoint).into();
    let mut known = KNOWN
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let labels = known.get_or_insert_with(HashMap::new);
    if labels.len() >= KNOWN_AT_MOST {
        labels.clear();
    }
    labels.insert(endpoint.to_owned(), Arc::clone(&label));
    label
}

/// The key labels are hashed with; set once at start ([`key_with`]), else random.
static KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Keys every label with `secret` (the scheduler token); without a call, labels use a random
/// key of this process. Only the first call counts.
pub fn key_with(secret: Option<&str>) {
    let key = match secret {
        Some(secret) => Sha256::new()
            .chain_update(b"llmgw backend label\0")
            .chain_update(secret.as_bytes())
            .finalize()
            .into(),
        None => random_key(),
    };
    let _ = KEY.set(key);
}

/// 256 bits from the standard library's OS-seeded hasher keys.
fn random_key() -> [u8; 32] {
    let mut hasher = Sha256::new();
    for round in 0u8..4 {
        let state = std::collections::hash_map::RandomState::new();
        hasher.update(state.hash_one(round).to_le_bytes());
    }
    hasher.finalize().into()
}

fn label(endpoint: &str) -> String {
    let (kind, url) = endpoint.split_once('@').unwrap_or(("backend", endpoint));
    let key = KEY.get_or_init(random_key);
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(url.as_bytes())
        .finalize();
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_names_the_protocol_and_hides_the_address() {
        let label = public("ollama@http://10.0.0.7:11434");
        assert!(label.starts_with("ollama-"), "{label}");
        assert_eq!(label.len(), "ollama-".len() + 8);
        assert!(!label.contains("10.0.0.7") && !label.contains("11434"));
        assert_eq!(label, public("ollama@http://10.0.0.7:11434"), "stable");
        assert_ne!(label, public("ollama@http://10.0.0.8:11434"), "distinct");
        assert!(public("no-kind").starts_with("backend-"));
        let unkeyed = Sha256::digest(b"http://10.0.0.7:11434");
        let unkeyed: String = unkeyed[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_ne!(
            label.as_ref(),
            format!("ollama-{unkeyed}"),
            "keyed, not a plain hash"
        );
    }
}

//! What `x-llmgw-backend` tells a client about the endpoint that served it: the protocol and a
//! short hash of the endpoint's URL (`ollama-1a2b3c4d`). Stable and distinct per endpoint, so a
//! client or an operator can tell replicas apart and correlate with the scheduler's logs, where
//! the full name is; it reveals no internal host or port.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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

fn label(endpoint: &str) -> String {
    let (kind, url) = endpoint.split_once('@').unwrap_or(("backend", endpoint));
    let digest = Sha256::digest(url.as_bytes());
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
    }
}

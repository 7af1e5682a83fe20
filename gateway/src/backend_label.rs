//! What `x-llmgw-backend` tells a client about the endpoint that served it: the protocol and a
//! short hash of the endpoint's URL (`ollama-1a2b3c4d`). Stable and distinct per endpoint, so a
//! client or an operator can tell replicas apart and correlate with the scheduler's logs, where
//! the full name is; it reveals no internal host or port.

use sha2::{Digest, Sha256};

/// The public label of the scheduler's endpoint name (`kind@url`).
pub fn public(endpoint: &str) -> String {
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

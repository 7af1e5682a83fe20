//! API keys: how a request presents one (`Authorization: Bearer <key>`, what the OpenAI SDKs
//! send, or `x-api-key`), and the SHA-256 the config stores instead of the key. The key itself
//! is never stored, logged or printed: only its hash is compared, and only a key's configured
//! `name` appears in logs.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The SHA-256 of a key.
pub type KeyHash = [u8; 32];

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex of a hash, as `gateway hash-key` prints it.
pub fn hex(hash: &KeyHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (already validated by the config).
pub fn from_hex(text: &str) -> Option<KeyHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        hash[i] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(hash)
}

/// The key the request presents, if any.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_and_match_sha256() {
        let h = hash("test");
        assert_eq!(
            hex(&h),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(from_hex(&hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn reads_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), None);
        headers.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented(&headers), Some("k2"));
        headers.insert("authorization", "Bearer k1".parse().unwrap());
        assert_eq!(presented(&headers), Some("k1"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented(&headers), Some("k2"));
    }
}

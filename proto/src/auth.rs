//! [`SchedulerToken`]: the shared secret (`SCHEDULER_AUTH_TOKEN`) that gRPC callers of the
//! scheduler present as `authorization: Bearer <token>`. Its `Debug` and `Display` never show
//! the value, and comparison takes the same time however many bytes match.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// The scheduler's bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct SchedulerToken(String);

impl SchedulerToken {
    /// The `authorization` metadata value to send.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The secret itself, to derive keys from (never to print).
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `authorization` (the metadata value as received) carries this token.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        // `subtle` compares without stopping at the first difference (and without branches
        // the optimizer could add back); only the length is not secret.
        bool::from(presented.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

impl FromStr for SchedulerToken {
    type Err = EmptyToken;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty() {
            return Err(EmptyToken);
        }
        Ok(Self(value.to_owned()))
    }
}

/// `SCHEDULER_AUTH_TOKEN` was set but empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyToken;

impl fmt::Display for EmptyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token must not be empty (unset the variable to run without one)")
    }
}

impl std::error::Error for EmptyToken {}

impl fmt::Debug for SchedulerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SchedulerToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_bearer_and_never_prints_it() {
        let token: SchedulerToken = "s3cret".parse().unwrap();
        assert!(token.accepts(Some("Bearer s3cret")));
        assert!(!token.accepts(Some("Bearer s3cre")));
        assert!(!token.accepts(Some("s3cret")));
        assert!(!token.accepts(None));
        assert_eq!(format!("{token:?}"), "SchedulerToken(***)");
        assert_eq!("  ".parse::<SchedulerToken>(), Err(EmptyToken));
    }
}

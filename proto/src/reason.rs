//! [`Reason`]: the closed vocabulary of why a request did not complete. The scheduler sends it
//! as `x-llmgw-reason` status metadata; the gateway passes it on as the `x-llmgw-reason` header
//! and the error `code`. One enum, so a new reason cannot be missing a status or a message.

use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $word:literal,)*) => {
        /// Why a request was refused or failed: a stable snake_case word on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The word sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $word,)*
                }
            }
        }

        impl FromStr for Reason {
            type Err = UnknownReason;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                match word {
                    $($word => Ok(Reason::$variant),)*
                    _ => Err(UnknownReason),
                }
            }
        }
    };
}

reasons! {
    /// The request is malformed; the message names the field.
    InvalidRequest => "invalid_request",
    /// The request body is larger than the configured limit.
    BodyTooLarge => "body_too_large",
    /// The request body stalled or did not arrive in time (`GATEWAY_BODY_*_TIMEOUT_MS`).
    BodyTimeout => "body_timeout",
    /// No such HTTP route.
    RouteNotFound => "route_not_found",
    /// No such model (or version) in the routing table or on the backend.
    ModelNotFound => "model_not_found",
    /// Missing or unknown API key.
    InvalidApiKey => "invalid_api_key",
    /// The key's tenant may not use this model.
    ModelNotAllowed => "model_not_allowed",
    /// The status page needs a key with `admin = true` (or, in open mode, a permitted client).
    AdminRequired => "admin_required",
    /// The key's tenant may not ask for this priority.
    PriorityNotAllowed => "priority_not_allowed",
    /// An engine option the tenant may not pass.
    OptionNotAllowed => "option_not_allowed",
    /// A request-, token- or concurrency-rate limit of the tenant is reached.
    RateLimited => "rate_limited",
    /// The tenant's daily or monthly token budget is spent.
    BudgetExhausted => "budget_exhausted",
    /// The limit store cannot be reached and the gateway is configured to deny.
    LimitsUnavailable => "limits_unavailable",
    /// The shared store of the Responses API's stored responses (Redis) cannot be reached.
    StoreUnavailable => "store_unavailable",
    /// The gateway has `GATEWAY_MAX_IN_FLIGHT` requests in flight already.
    GatewayOverloaded => "gateway_overloaded",
    /// A gRPC caller without the scheduler's token.
    Unauthenticated => "unauthenticated",
    /// The pool's queue is full.
    QueueFull => "queue_full",
    /// A higher-ranked request took this one's place in a full queue.
    Displaced => "displaced",
    /// No slot became free within the pool's queue timeout.
    QueueTimeout => "queue_timeout",
    /// The request's first-token objective (`x-slo-ttft-ms` or its class's default) cannot be
    /// met: the work queued ahead and its own prefill are predicted to take longer.
    SloUnattainable => "slo_unattainable",
    /// The prompt is too heavy for the first-token budget: the engine was working on it, and
    /// it was not retried elsewhere (no engine is blamed).
    PromptTooHeavy => "prompt_too_heavy",
    /// The request's own deadline passed.
    DeadlineExceeded => "deadline_exceeded",
    /// The scheduler is shutting down.
    ShuttingDown => "shutting_down",
    /// This scheduler replica stands by; its group's leader serves (named in `x-llmgw-leader`).
    NotLeader => "not_leader",
    /// Every endpoint of the pool is down or ejected.
    NoHealthyBackend => "no_healthy_backend",
    /// The backend did not connect or answer in time.
    ConnectTimeout => "connect_timeout",
    /// The backend produced no first token in time.
    TtftTimeout => "ttft_timeout",
    /// The backend stopped producing tokens.
    IdleTimeout => "idle_timeout",
    /// The generation exceeded the model's time limit.
    TotalTimeout => "total_timeout",
    /// The backend could not be reached.
    BackendUnavailable => "backend_unavailable",
    /// The backend refused the request as malformed.
    BackendRejected => "backend_rejected",
    /// The backend said it is overloaded (429/503).
    BackendOverloaded => "backend_overloaded",
    /// The backend answered with another error status.
    BackendError => "backend_error",
    /// The backend sent bytes that are not its protocol.
    BackendBadResponse => "backend_bad_response",
    /// The backend's stream ended or broke before the generation finished.
    BackendInterrupted => "backend_interrupted",
    /// The scheduler could not be reached (transport failure, no reason metadata).
    SchedulerUnavailable => "scheduler_unavailable",
    /// The scheduler failed without saying why.
    SchedulerError => "scheduler_error",
    /// The call was cancelled (the client went away).
    Cancelled => "cancelled",
}

/// A word that is not in the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownReason;

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a known reason")
    }
}

impl std::error::Error for UnknownReason {}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status metadata on a failure after an engine worked on the request: `prompt` (the caller
/// is charged the prompt). Absent when no engine did any work (nothing is charged).
pub const WORK_METADATA: &str = "x-llmgw-work";

/// The status metadata key that carries the reason.
pub const REASON_METADATA: &str = "x-llmgw-reason";

/// The status metadata key that names the request field an `INVALID_ARGUMENT` is about
/// (`messages[0].role`, `n`), so the gateway's 400 names it in `param` like its own.
pub const PARAM_METADATA: &str = "x-llmgw-param";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_is_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let word = reason.as_str();
            assert!(seen.insert(word), "{word} twice");
            assert!(word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(word.parse::<Reason>(), Ok(*reason));
        }
        assert_eq!("nonsense".parse::<Reason>(), Err(UnknownReason));
    }
}

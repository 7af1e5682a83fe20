//! The scheduler's gRPC contract: generated messages, client and server for
//! `llmgw.scheduler.v1.Scheduler`, plus the encoded descriptor set that server
//! reflection serves.
//!
//! # Layout
//! - `proto/llmgw/scheduler/v1/scheduler.proto`: the contract itself.
//! - `build.rs`: compiles it with protox (no system `protoc`).
//! - [`codec::LeanCodec`]: the generated code's codec (prost, small per-call buffers).
//! - [`SchedulerToken`]: the bearer token gRPC callers present (`SCHEDULER_AUTH_TOKEN`).
//! - [`Reason`]: the closed vocabulary of refusal and failure reasons both services share.
//! - [`merge_tool_call`]: the one way streamed tool-call pieces join into whole calls.
//! - [`engine_options`]: the engine options a request may pass, per backend protocol.

#![allow(clippy::all)]

/// `llmgw.scheduler.v1`: messages, `scheduler_client`, `scheduler_server`.
pub mod v1 {
    tonic::include_proto!("llmgw.scheduler.v1");
}

/// Encoded `FileDescriptorSet` of every message and service above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scheduler_descriptor.bin"));

mod auth;
pub mod codec;
pub mod engine_options;
mod reason;
mod tool_calls;

pub use auth::{EmptyToken, SchedulerToken};
pub use reason::{PARAM_METADATA, REASON_METADATA, Reason, UnknownReason, WORK_METADATA};
pub use tool_calls::merge_tool_call;

/// The tenant of a request that names none (open mode without `x-tenant-id`, or a direct gRPC
/// caller that leaves it empty): one name for both services.
pub const ANONYMOUS_TENANT: &str = "anonymous";

/// Prompt tokens an image counts for in the gateway's and the scheduler's estimates (a vision
/// model's encoder emits a fixed number per image or tile: LLaVA 576, Gemma 3 256, Qwen2-VL
/// more for larger images); the engine's own count replaces it once it answers.
pub const IMAGE_PROMPT_TOKENS: u32 = 576;

/// Whether `text` matches `glob`: `*` matches any run of characters, `?` one character,
/// everything else itself (model allow-lists in `GATEWAY_CONFIG` and `allowed_models` on
/// requests: one definition for both services).
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

/// The one bucket every tenant beyond a counter's bound (and, in metrics, every open-mode
/// tenant the config does not list) is counted under. The gateway refuses a configured tenant
/// of this name, so a real tenant never shares its numbers with strangers.
pub const OVERFLOW_TENANT: &str = "other";

/// The grammar of tenant ids, request ids and group names both services accept: 1 to 64
/// letters, digits, `.`, `_` or `-`. One definition, so a direct gRPC caller is held to the
/// same rule as an HTTP client.
pub fn valid_token(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

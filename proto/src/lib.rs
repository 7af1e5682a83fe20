//! The scheduler's gRPC contract: generated messages, client and server for
//! `llmgw.scheduler.v1.Scheduler`, plus the encoded descriptor set that server
//! reflection serves.
//!
//! # Layout
//! - `proto/llmgw/scheduler/v1/scheduler.proto`: the contract itself.
//! - `build.rs`: compiles it with protox (no system `protoc`).

#![allow(clippy::all)]

/// `llmgw.scheduler.v1`: messages, `scheduler_client`, `scheduler_server`.
pub mod v1 {
    tonic::include_proto!("llmgw.scheduler.v1");
}

/// Encoded `FileDescriptorSet` of every message and service above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scheduler_descriptor.bin"));

/// Every `x-llmgw-reason` the scheduler sends in status metadata: the stable vocabulary the
/// gateway passes to clients (header `x-llmgw-reason`, error `code`).
pub const REASONS: &[&str] = &[
    "invalid_request",
    "model_not_found",
    "queue_full",
    "displaced",
    "queue_timeout",
    "deadline_exceeded",
    "shutting_down",
    "no_healthy_backend",
    "connect_timeout",
    "ttft_timeout",
    "idle_timeout",
    "total_timeout",
    "backend_unavailable",
    "backend_rejected",
    "backend_overloaded",
    "backend_error",
    "backend_bad_response",
    "backend_interrupted",
];

//! OpenAI wire types: plain serde data, no I/O, no policy.

pub mod request;
pub mod response;

//! The one seam between OpenAI and the scheduler's proto: requests in, events out.

pub mod anthropic_request;
pub mod anthropic_response;
pub mod completion;
pub mod embedding;
pub mod fields;
pub mod image;
pub mod ollama_request;
pub mod ollama_response;
pub mod request;
pub mod response;
pub mod responses_request;
pub mod responses_response;
pub mod shape;

//! The one seam between OpenAI and the scheduler's proto: requests in, events out.

pub mod request;
pub mod response;

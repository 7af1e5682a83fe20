//! The `Retry-After` an overloaded engine sends: every 429 and 503 the simulator answers (its
//! own queue limit, or a `status:` fault) carries [`RETRY_AFTER_SECS`], so tests can check the
//! hint travels from the engine to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// Seconds in the simulator's `Retry-After`.
pub const RETRY_AFTER_SECS: u64 = 7;

/// Adds `Retry-After` to a 429 or 503; other answers pass unchanged.
pub fn with_retry_after(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

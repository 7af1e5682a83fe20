//! Response shapes both wire protocols send: a streamed body, and one cut mid-body.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use futures::Stream;

/// A 200 response whose body is `chunks`; an `Err` chunk aborts the connection mid-body.
pub(crate) fn streaming_response(
    content_type: &'static str,
    chunks: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A 200 whose body starts and is then cut: the head and a few bytes reach the client (the
/// pause lets the server flush them), then the connection drops.
pub(crate) fn cut_response(content_type: &'static str) -> Response {
    let chunks = async_stream::stream! {
        yield Ok(Bytes::from_static(b"{\"model\":"));
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        yield Err(std::io::Error::other("simulated drop"));
    };
    streaming_response(content_type, chunks)
}

//! A request an engine's pooled connection dropped unanswered is sent again. An engine may
//! close a keep-alive connection at any moment between requests — llama.cpp's server closes
//! those its extra HTTP threads served, cpp-httplib after 100 requests or 5 s idle, uvicorn
//! after 5 s — and a request written in that instant gets no answer at all ("connection
//! closed before message completed"). Nothing was answered, so nothing reached the client;
//! sending it again (at most [`RESENDS`] times, each on whatever connection the pool gives,
//! a new one once the dead ones are gone) is what a browser does, rather than failing the
//! request or blaming the endpoint's breaker.

/// Resends after a connection closed unanswered.
pub const RESENDS: usize = 2;

/// Whether `err` is a connection that closed before any answer (hyper's incomplete message),
/// as opposed to a refused connection, a timeout or an answer cut short.
pub fn closed_unanswered(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper.is_incomplete_message();
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::backend::{SendGate, http_client};

    /// A server that answers the first request on each connection and then, like an engine
    /// retiring a keep-alive connection, reads the next request and closes without a word.
    async fn one_answer_per_connection() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    let _ = socket.read(&mut buffer).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = socket.read(&mut buffer).await;
                });
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_engine_retired_is_sent_again() {
        let (url, connections) = one_answer_per_connection().await;
        let http = http_client(std::time::Duration::from_secs(2)).unwrap();
        let gate: SendGate = Arc::new(|| true);
        for _ in 0..3 {
            let response = crate::backend::send(http.post(&url).body("{}"), &gate, "m")
                .await
                .unwrap();
            assert_eq!(response.text().await.unwrap(), "ok");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            3,
            "each retired connection was replaced"
        );

        // Without the resend, the same server fails the second request.
        let plain = http_client(std::time::Duration::from_secs(2)).unwrap();
        let (url, _) = one_answer_per_connection().await;
        plain.post(&url).body("{}").send().await.unwrap();
        let err = plain.post(&url).body("{}").send().await.unwrap_err();
        assert!(super::closed_unanswered(&err), "{err}");
    }
}

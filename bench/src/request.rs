//! One timed chat completion request.

use std::time::Duration;

use tokio::time::Instant;

/// How one request went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HTTP status (0 if the request failed below HTTP).
    pub status: u16,
    /// Time to the first content token (streams), or to the whole answer.
    pub ttft: Duration,
    /// Time to the end of the answer.
    pub total: Duration,
    /// The server's `Retry-After` on a refusal.
    pub retry_after: Option<Duration>,
    /// Streams: the time between consecutive body chunks after the first token.
    pub gaps: Vec<Duration>,
    /// The first-token time admission predicted (`x-llmgw-predicted-ttft-ms`), if sent.
    pub predicted_ttft: Option<Duration>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct ChatCall {
    pub url: String,
    pub body: serde_json::Value,
    pub stream: bool,
    pub headers: Vec<(&'static str, String)>,
}

impl ChatCall {
    /// A short chat request for `model` at `url`.
    pub fn new(url: &str, model: &str, stream: bool, max_tokens: u32) -> Self {
        let body = serde_json::json!({
            "model": model,
            "stream": stream,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Write one sentence about load testing."}],
        });
        Self {
            url: url.to_owned(),
            body,
            stream,
            headers: Vec::new(),
        }
    }

    /// Adds a request header (tenant, priority).
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Sends it and times it.
    pub async fn send(&self, http: &reqwest::Client) -> Outcome {
        let start = Instant::now();
        let failed = |status| Outcome {
            status,
            ttft: start.elapsed(),
            total: start.elapsed(),
            retry_after: None,
            gaps: Vec::new(),
            predicted_ttft: None,
        };
        let Ok(mut response) = self.request(http).send().await else {
            return failed(0);
        };
        let status = response.status().as_u16();
        let predicted_ttft = response
            .headers()
            .get("x-llmgw-predicted-ttft-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_millis);
        if status != 200 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let _ = response.bytes().await;
            return Outcome {
                retry_after,
                ..failed(status)
            };
        }
        if !self.stream {
            if response.bytes().await.is_err() {
                return failed(0);
            }
            let total = start.elapsed();
            return Outcome {
                status,
                ttft: total,
                total,
                retry_after: None,
                gaps: Vec::new(),
                predicted_ttft,
            };
        }
        let mut ttft = None;
        let mut seen = Vec::new();
        let mut gaps = Vec::new();
        let mut last_chunk = start;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let now = Instant::now();
                    if ttft.is_none() {
                        seen.extend_from_slice(&chunk);
                        if has_content_token(&seen) {
                            ttft = Some(now - start);
                        }
                    } else {
                        gaps.push(now - last_chunk);
                    }
                    last_chunk = now;
                }
                Ok(None) => break,
                Err(_) => return failed(0),
            }
        }
        let total = start.elapsed();
        Outcome {
            status,
            ttft: ttft.unwrap_or(total),
            total,
            retry_after: None,
            gaps,
            predicted_ttft,
        }
    }

    /// Opens a stream and reads until its first content token; the response is returned still
    /// open (None if it failed or ended first), so callers can hold many streams at once.
    pub async fn open_stream(&self, http: &reqwest::Client) -> Option<reqwest::Response> {
        let mut response = self.request(http).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let mut seen = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            seen.extend_from_slice(&chunk);
            if has_content_token(&seen) {
                return Some(response);
            }
        }
        None
    }

    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut request = http.post(&self.url).json(&self.body);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request
    }
}

/// A `"content":"x` (spaces allowed after the colon, as llama.cpp writes it) with a non-empty
/// value: a real token, not the empty role chunk.
fn has_content_token(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":";
    bytes.windows(KEY.len()).enumerate().any(|(at, window)| {
        if window != KEY {
            return false;
        }
        let mut value = bytes[at + KEY.len()..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace());
        value.next() == Some(&b'"') && value.next().is_some_and(|&b| b != b'"')
    })
}

/// An HTTP client for load generation: no Nagle, a deep idle pool.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::has_content_token;

    #[test]
    fn a_content_token_is_found_with_or_without_a_space() {
        assert!(has_content_token(br#"{"delta":{"content":"Hi"}}"#));
        assert!(has_content_token(br#"{"delta": {"content": "Load"}}"#));
        assert!(!has_content_token(
            br#"{"delta":{"role":"assistant","content":""}}"#
        ));
        assert!(!has_content_token(br#"{"delta":{"content": null}}"#));
    }
}

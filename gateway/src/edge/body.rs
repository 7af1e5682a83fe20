//! [`GuardedBody`]: every request body as the edge hands it to the router — with deadlines and
//! a share of the gateway's body memory, so no client can hold a connection or memory by
//! sending slowly or by sending much.
//!
//! - **Stall**: no bytes for `GATEWAY_BODY_STALL_TIMEOUT_MS` while someone reads it → error.
//! - **Whole body**: not complete within `GATEWAY_BODY_TIMEOUT_MS` of its head → error (a
//!   client trickling a byte every few seconds never stalls, but never finishes either).
//! - **Memory**: the bodies being read and parsed count against one budget
//!   (`GATEWAY_MAX_BODY_BUFFER_BYTES`), each byte [`MEMORY_PER_BODY_BYTE`] times, charged as it
//!   arrives (never by a declared `Content-Length`: a client that declares 4 MiB and sends a
//!   byte at a time would hold budget it never used); past the budget the read fails at once
//!   and the client gets `503 gateway_overloaded`. A body that is only discarded (a refusal draining
//!   it, [`BodyTicket::discard`]) costs no budget: its frames are dropped as they arrive.
//!
//! The budget taken is held by the request's [`BodyTicket`] until the handler returned its
//! response head (the parsed request is gone by then), not just until the last byte was read.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Bytes of memory a held body costs per byte of body, measured (`test_hostile_clients`):
/// the bytes as received and gathered, the parsed JSON, the request for the scheduler and its
/// encoding are alive together, about 7× at the peak with 4 MiB bodies.
pub const MEMORY_PER_BODY_BYTE: usize = 8;

/// The limits every request body is read under.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Longest gap between two pieces of the body.
    pub stall: Duration,
    /// Longest time for the whole body, from its head.
    pub total: Duration,
    /// Memory for bodies held at once, gateway-wide (each byte counted
    /// [`MEMORY_PER_BODY_BYTE`] times); `None` = unbounded.
    pub budget: Option<Arc<Semaphore>>,
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body stalled: no bytes for {0} ms")]
    Stalled(u64),
    #[error("the request body did not arrive within {0} ms")]
    TooSlow(u64),
    #[error("the gateway holds its limit of request body bytes; retry shortly")]
    Overloaded,
    #[error("cannot read the request body: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BodyError {
    /// The guard's own error behind a body-reading failure (axum wraps it), if it is one.
    pub fn find<'a>(mut error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        loop {
            if let Some(found) = error.downcast_ref::<BodyError>() {
                return Some(found);
            }
            error = error.source()?;
        }
    }
}

impl BodyError {
    /// What the client is told; the connection closes after it (the rest of the body is
    /// never read).
    pub fn to_api_error(&self) -> crate::error::ApiError {
        use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
        use llmgw_proto::Reason;
        let (status, reason, retry_after_s) = match self {
            Self::Stalled(_) | Self::TooSlow(_) => {
                (StatusCode::REQUEST_TIMEOUT, Reason::BodyTimeout, None)
            }
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::GatewayOverloaded,
                Some(1),
            ),
            Self::Transport(_) => {
                return crate::error::ApiError::InvalidRequest {
                    message: self.to_string(),
                    param: None,
                };
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        crate::error::ApiError::Refused(Box::new(crate::error::Refusal {
            status,
            reason,
            message: self.to_string(),
            param: None,
            retry_after_s,
            headers,
        }))
    }
}

/// One request's share of the body budget, shared by its body and the edge.
#[derive(Debug, Default)]
pub struct BodyTicket {
    held: Mutex<Option<OwnedSemaphorePermit>>,
    discarding: AtomicBool,
}

impl BodyTicket {
    /// The body will only be dropped as it arrives: what it holds goes back, and the rest of
    /// it costs nothing.
    pub fn discard(&self) {
        self.discarding.store(true, Ordering::Relaxed);
        self.release();
    }

    /// Gives the request's budget back (its handler is done with the body).
    pub fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.take();
        }
    }

    fn discarding(&self) -> bool {
        self.discarding.load(Ordering::Relaxed)
    }

    /// Takes `bytes` more of `budget`, or says the budget is spent.
    fn take(&self, budget: &Arc<Semaphore>, bytes: usize) -> Result<(), BodyError> {
        if bytes == 0 || self.discarding() {
            return Ok(());
        }
        let bytes = bytes
            .checked_mul(MEMORY_PER_BODY_BYTE)
            .and_then(|cost| u32::try_from(cost).ok())
            .ok_or(BodyError::Overloaded)?;
        let permit = Arc::clone(budget)
            .try_acquire_many_owned(bytes)
            .map_err(|_| BodyError::Overloaded)?;
        let Ok(mut held) = self.held.lock() else {
            return Err(BodyError::Overloaded);
        };
        match held.as_mut() {
            Some(existing) => existing.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// A request body read under [`BodyLimits`].
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        limits: BodyLimits,
        ticket: Arc<BodyTicket>,
        deadline: Instant,
        timer: Option<Pin<Box<Sleep>>>,
        failed: bool,
    }
}

impl<B> GuardedBody<B> {
    /// Guards `inner`, whose head arrived just now.
    pub fn new(inner: B, limits: BodyLimits, ticket: Arc<BodyTicket>) -> Self {
        let deadline = Instant::now() + limits.total;
        Self {
            inner,
            limits,
            ticket,
            deadline,
            timer: None,
            failed: false,
        }
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let fail = |failed: &mut bool, error: BodyError| {
            *failed = true;
            Poll::Ready(Some(Err(error)))
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(budget), Some(data)) = (&this.limits.budget, frame.data_ref())
                    && let Err(error) = this.ticket.take(budget, data.len())
                {
                    return fail(this.failed, error);
                }
                // Progress: the stall clock starts again (the whole-body deadline does not).
                if let Some(timer) = this.timer.as_mut() {
                    let next = (Instant::now() + this.limits.stall).min(*this.deadline);
                    timer.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => fail(this.failed, BodyError::Transport(error.into())),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let (stall, deadline) = (this.limits.stall, *this.deadline);
                let timer = this.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        (Instant::now() + stall).min(deadline),
                    ))
                });
                ready!(timer.as_mut().poll(cx));
                let error = if Instant::now() >= deadline {
                    BodyError::TooSlow(this.limits.total.as_millis() as u64)
                } else {
                    BodyError::Stalled(stall.as_millis() as u64)
                };
                fail(this.failed, error)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn limits(budget: Option<usize>) -> BodyLimits {
        BodyLimits {
            stall: Duration::from_millis(100),
            total: Duration::from_millis(1_000),
            budget: budget.map(|bytes| Arc::new(Semaphore::new(bytes))),
        }
    }

    /// A body that yields `pieces`, each after `gap`.
    fn trickle(
        pieces: usize,
        gap: Duration,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames = futures::stream::unfold(0, move |sent| async move {
            if sent == pieces {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(Frame::data(Bytes::from_static(b"x"))), sent + 1))
        });
        StreamBody::new(frames)
    }

    async fn read<B: Body<Data = Bytes, Error = BodyError>>(body: B) -> Result<usize, BodyError> {
        Box::pin(body)
            .collect()
            .await
            .map(|all| all.to_bytes().len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_in_time_is_read_whole() {
        let ticket = Arc::new(BodyTicket::default());
        let body = GuardedBody::new(trickle(5, Duration::from_millis(50)), limits(None), ticket);
        assert_eq!(read(body).await.ok(), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_longer_than_the_stall_timeout_fails() {
        let ticket = Arc::new(BodyTicket::default());
        let body = GuardedBody::new(trickle(5, Duration::from_millis(150)), limits(None), ticket);
        assert!(matches!(read(body).await, Err(BodyError::Stalled(100))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_that_never_stalls_still_ends_at_the_whole_body_deadline() {
        let ticket = Arc::new(BodyTicket::default());
        let body = GuardedBody::new(
            trickle(100, Duration::from_millis(90)),
            limits(None),
            ticket,
        );
        assert!(matches!(read(body).await, Err(BodyError::TooSlow(1_000))));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_held_until_released_and_refuses_beyond() {
        let limits = limits(Some(8 * MEMORY_PER_BODY_BYTE));
        let budget = limits
            .budget
            .clone()
            .unwrap_or_else(|| Arc::new(Semaphore::new(0)));
        let first = Arc::new(BodyTicket::default());
        let body = GuardedBody::new(
            trickle(5, Duration::ZERO),
            limits.clone(),
            Arc::clone(&first),
        );
        assert_eq!(read(body).await.ok(), Some(5));
        assert_eq!(
            budget.available_permits(),
            3 * MEMORY_PER_BODY_BYTE,
            "read bytes stay held"
        );
        let second = Arc::new(BodyTicket::default());
        let over = GuardedBody::new(trickle(5, Duration::ZERO), limits.clone(), second);
        assert!(matches!(read(over).await, Err(BodyError::Overloaded)));
        first.release();
        assert_eq!(budget.available_permits(), 8 * MEMORY_PER_BODY_BYTE);
        let discarded = Arc::new(BodyTicket::default());
        discarded.discard();
        let body = GuardedBody::new(trickle(50, Duration::ZERO), limits, discarded);
        assert_eq!(
            read(body).await.ok(),
            Some(50),
            "a discarded body costs no budget"
        );
        assert_eq!(budget.available_permits(), 8 * MEMORY_PER_BODY_BYTE);
    }

    #[test]
    fn the_guards_error_is_found_behind_wrappers() {
        let wrapped = axum::Error::new(BodyError::Overloaded);
        assert!(matches!(
            BodyError::find(&wrapped),
            Some(BodyError::Overloaded)
        ));
        let other = std::io::Error::other("x");
        assert!(BodyError::find(&other).is_none());
    }
}

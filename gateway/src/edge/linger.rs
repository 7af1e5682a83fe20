//! [`Lingering`]: a client socket that, once the server has said its last word and shut its
//! side, is read and discarded a little longer before it is closed (nginx's "lingering
//! close").
//!
//! A refusal that does not read a large body (a missing key, a body past the memory budget)
//! answers and closes while the client is still sending. Closing a socket with unread data
//! makes the kernel send a reset, and a reset can destroy the answer before the client reads
//! it: the client sees "connection reset" instead of its 401 or 503. Lingering — the write
//! side shut (FIN after the answer), what still arrives read and dropped until the client
//! closes, sends nothing for [`LINGER_GAP`], [`LINGER_TIME`] passes or [`LINGER_BYTES`] were
//! dropped — lets the answer arrive.
//! It costs a small buffer per lingering socket and no memory for the body; at most
//! [`MAX_LINGERING`] sockets linger at once, beyond that they close at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The longest a closed connection is read after its answer…
const LINGER_TIME: Duration = Duration::from_secs(30);
/// …and the longest it may send nothing meanwhile (nginx's `lingering_timeout`).
const LINGER_GAP: Duration = Duration::from_secs(5);
/// The most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 8 << 20;
/// Sockets lingering at once, gateway-wide.
pub const MAX_LINGERING: usize = 4096;

/// A client connection's socket.
#[derive(Debug)]
pub struct Lingering {
    stream: Option<TcpStream>,
    /// The server shut its write side: the answer is complete.
    answered: bool,
    places: Arc<Semaphore>,
}

impl Lingering {
    /// `places`: the gateway's lingering places ([`MAX_LINGERING`]).
    pub fn new(stream: TcpStream, places: Arc<Semaphore>) -> Self {
        Self {
            stream: Some(stream),
            answered: false,
            places,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(err) => return Poll::Ready(Err(err)),
        };
        if shut.is_ready() {
            self.answered = true;
        }
        shut
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if !self.answered {
            return;
        }
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut buffer = [0u8; 8192];
            let mut dropped = 0usize;
            let drain = async {
                while dropped < LINGER_BYTES {
                    match tokio::time::timeout(LINGER_GAP, stream.read(&mut buffer)).await {
                        Ok(Ok(0) | Err(_)) | Err(_) => return,
                        Ok(Ok(read)) => dropped += read,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
            drop(place);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that answers at once and closes while the client still sends: without the
    /// linger the client's read fails with a reset (often) instead of returning the answer.
    #[tokio::test]
    async fn an_answer_sent_while_the_client_still_sends_arrives() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let places = Arc::new(Semaphore::new(MAX_LINGERING));
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut socket = Lingering::new(socket, places);
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await.unwrap();
            socket.write_all(b"refused").await.unwrap();
            socket.shutdown().await.unwrap();
        });
        let mut client = TcpStream::connect(address).await.unwrap();
        let payload = vec![b'x'; 4 << 20];
        let (mut read_half, mut write_half) = client.split();
        let sending = async {
            let _ = write_half.write_all(&payload).await;
        };
        let mut answer = Vec::new();
        let reading = read_half.read_to_end(&mut answer);
        let (_, read) = tokio::join!(sending, reading);
        read.unwrap();
        assert_eq!(answer, b"refused");
        server.await.unwrap();
    }
}

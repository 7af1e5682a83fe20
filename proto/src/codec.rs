//! The Scheduler service's gRPC codec: prost encoding, as tonic's default, with smaller
//! per-call buffers. tonic gives every call an 8 KiB encode buffer and an 8 KiB decode buffer
//! that live as long as the stream; our messages are a token or two (tens of bytes), so on a
//! gateway holding thousands of streams those buffers were most of a stream's memory. They
//! still grow on demand for a large request (up to the message size limits).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial buffer per call, in bytes: a chat request of a few messages fits without growing.
pub const CALL_BUFFER_BYTES: usize = 1024;

/// Encoded bytes after which a stream yields to the transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// A prost codec with [`CALL_BUFFER_BYTES`] buffers; used by the generated client and server.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(CALL_BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

//! Frames on iroh streams: `length u32 LE | CBOR`, with a hard size limit.

use iroh::endpoint::{RecvStream, SendStream};
use minicbor::{Decode, Encode};

/// Largest frame a peer may send us; control messages are far smaller.
pub const MAX_FRAME: usize = 64 << 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame over the limit.
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    /// The frame is not CBOR of the expected shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    /// The stream failed.
    #[error("stream error: {0}")]
    Stream(String),
}

/// Writes one frame.
pub async fn write<T: Encode<()>>(send: &mut SendStream, msg: &T) -> Result<(), FrameError> {
    write_max(send, msg, MAX_FRAME).await
}

/// Writes one frame of at most `max` bytes.
pub async fn write_max<T: Encode<()>>(
    send: &mut SendStream,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let body = minicbor::to_vec(msg).expect("encoding into a Vec cannot fail");
    if body.len() > max {
        return Err(FrameError::TooLarge(body.len(), max));
    }
    write_body(send, &body).await
}

/// Writes one frame whose CBOR body is already encoded.
pub async fn write_body(send: &mut SendStream, body: &[u8]) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
    send.write_all(&buf).await.map_err(|e| FrameError::Stream(e.to_string()))
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read<T: for<'b> Decode<'b, ()>>(
    recv: &mut RecvStream,
) -> Result<Option<T>, FrameError> {
    read_max(recv, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub async fn read_max<T: for<'b> Decode<'b, ()>>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<T>, FrameError> {
    match read_body(recv, max).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
    }
}

/// Decodes a frame's body.
pub fn decode<T: for<'b> Decode<'b, ()>>(body: &[u8]) -> Result<T, FrameError> {
    minicbor::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame's body (at most `max` bytes) without decoding it; `Ok(None)` at a clean
/// end of stream.
pub async fn read_body(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match read_exact_or_eof(recv, &mut len).await? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(FrameError::Truncated),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut body = vec![0u8; len];
    if read_exact_or_eof(recv, &mut body).await? != len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

/// Fills `buf` unless the stream ends; returns how many bytes it read.
pub async fn read_exact_or_eof(recv: &mut RecvStream, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut at = 0;
    while at < buf.len() {
        match recv.read(&mut buf[at..]).await.map_err(|e| FrameError::Stream(e.to_string()))? {
            Some(n) => at += n,
            None => break,
        }
    }
    Ok(at)
}

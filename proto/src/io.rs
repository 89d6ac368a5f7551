//! Reading and writing whole frames on any byte stream.
//!
//! `FrameReader` owns the read buffer; it knows `Read`, never a socket, so the server's request
//! loop and the client's connection are tested over in-memory pipes.

use bytes::Bytes;
use std::io::{self, Read, Write};

use crate::frame::{DecodeError, Frame, Header, HEADER_LEN};
use crate::msg::Message;

/// Each message says its cause itself, so no variant exposes it again as `source()`: printed
/// as a chain (`{:#}`, anyhow) it would be said twice (see `shelf_remote::RemoteError`).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The peer sent bytes that are not a valid frame. `id` is the request id from the header
    /// when the header was readable, so the receiver can still send an error reply.
    #[error("malformed frame: {error}")]
    Malformed { id: Option<u32>, error: DecodeError },
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl ReadError {
    /// The read timed out (a socket's read timeout passed with no byte).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ReadError::Io(e) if is_timeout(e))
    }
}

/// Whether `e` is a read or write timeout: `WouldBlock` from a socket with a timeout set,
/// `TimedOut` elsewhere.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads frames one at a time.
pub struct FrameReader<R> {
    inner: R,
    max_payload: u32,
    payload: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, max_payload: u32) -> Self {
        FrameReader {
            inner,
            max_payload,
            payload: Vec::new(),
        }
    }

    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next frame; `Ok(None)` only at a clean end of stream between frames.
    pub fn read_frame<M: Message>(&mut self) -> Result<Option<Frame<M>>, ReadError> {
        let mut head = [0u8; HEADER_LEN];
        if !read_full(&mut self.inner, &mut head)? {
            return Ok(None);
        }
        let h = Header::parse(&head, self.max_payload).map_err(|error| ReadError::Malformed {
            id: Some(Header::peek_id(&head)),
            error,
        })?;
        let len = h.len as usize;
        let malformed = |error| ReadError::Malformed {
            id: Some(h.id),
            error,
        };
        let msg = if len >= OWN_BUFFER_FROM {
            // A large frame is file data (a read's reply, a write): read into a buffer that
            // becomes the message's data, which the chunk cache or the disk write then takes
            // as it is. Copying it out of a reused buffer cost the mount a third of its CPU.
            let mut own = Vec::new();
            fill(&mut self.inner, &mut own, len)?;
            Frame::<M>::decode_shared(&h, &Bytes::from(own)).map_err(malformed)?
        } else {
            // The buffer keeps its size (at most `OWN_BUFFER_FROM`): a stream of frames would
            // otherwise allocate and free a fresh one for each.
            self.payload.clear();
            fill(&mut self.inner, &mut self.payload, len)?;
            Frame::<M>::decode_payload(&h, &self.payload).map_err(malformed)?
        };
        Ok(Some(Frame { id: h.id, msg }))
    }
}

/// The payload size from which a frame is read into a buffer of its own.
const OWN_BUFFER_FROM: usize = 64 << 10;

/// Reads `len` bytes onto the end of the empty `buf`. `len` is already within the limit, but
/// the buffer is filled only as bytes arrive (doubling from 64 KiB, never past `len`), so a
/// peer that announces a large frame and then stalls or hangs up costs little: the first
/// 64 KiB are reserved alone, the rest of `len` only once they have arrived, and reserved
/// memory costs nothing until bytes are written to it.
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>, len: usize) -> Result<(), ReadError> {
    const FIRST_STEP: usize = 64 << 10;
    debug_assert!(buf.is_empty());
    let mut filled = 0;
    while filled < len {
        let end = filled + (len - filled).min(filled.max(FIRST_STEP));
        if end > buf.capacity() {
            // Exact, and the rest at once: growing by doublings would move the bytes read
            // each time; this way only the first step's are moved, once.
            let want = if filled == 0 { end } else { len };
            buf.reserve_exact(want - buf.len());
        }
        buf.resize(end, 0);
        if !read_full(r, &mut buf[filled..end])? {
            return Err(ReadError::UnexpectedEof);
        }
        filled = end;
    }
    Ok(())
}

/// Fills `buf`. `Ok(false)`: the stream ended before the first byte. A stream that ends
/// part-way is `UnexpectedEof`.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ReadError::UnexpectedEof),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(true)
}

/// Writes `head` then `tail` as one frame: one `writev` when the stream takes it all, so a
/// read's data goes from its own buffer (see `Frame::encode_split`) without a copy.
pub fn write_parts<W: Write>(w: &mut W, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let mut parts = [head, tail];
    let mut first = 0;
    while first < parts.len() {
        let slices = [
            io::IoSlice::new(parts[first]),
            io::IoSlice::new(if first == 0 { parts[1] } else { &[] }),
        ];
        let mut n = match w.write_vectored(&slices) {
            Ok(0) if parts[first..].iter().any(|p| !p.is_empty()) => {
                return Err(io::ErrorKind::WriteZero.into())
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while first < parts.len() && n >= parts[first].len() {
            n -= parts[first].len();
            first += 1;
        }
        if first < parts.len() {
            parts[first] = &parts[first][n..];
        }
    }
    Ok(())
}

/// Encodes `frame` and writes it with one `write_all`, so a frame is one send on the socket.
pub fn write_frame<W: Write, M: Message>(
    w: &mut W,
    frame: &Frame<M>,
    max_payload: u32,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    scratch.clear();
    frame
        .encode(scratch, max_payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // `scratch` keeps its size, as the reader's buffer does.
    w.write_all(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DEFAULT_MAX_PAYLOAD;
    use crate::msg::Request;

    /// A writer that takes at most 3 bytes per call, as a full socket buffer may.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_parts_writes_both_whole_through_short_writes() {
        for (head, tail) in [
            (&b"head"[..], &b"and the tail"[..]),
            (b"x", b""),
            (b"", b"yz"),
        ] {
            let mut w = Trickle(Vec::new());
            write_parts(&mut w, head, tail).expect("written");
            assert_eq!(w.0, [head, tail].concat());
        }
    }

    #[test]
    fn reads_frames_then_clean_eof() {
        let mut bytes = Vec::new();
        let mut scratch = Vec::new();
        for id in 1..=3 {
            write_frame(
                &mut bytes,
                &Frame::new(id, Request::Ping),
                DEFAULT_MAX_PAYLOAD,
                &mut scratch,
            )
            .expect("writes");
        }
        let mut r = FrameReader::new(&bytes[..], DEFAULT_MAX_PAYLOAD);
        for id in 1..=3 {
            let f: Frame<Request> = r.read_frame().expect("valid").expect("present");
            assert_eq!(f.id, id);
        }
        assert!(r.read_frame::<Request>().expect("clean").is_none());
    }

    #[test]
    fn eof_inside_frame_is_an_error() {
        let bytes = Frame::new(
            1,
            Request::Stat {
                path: b"x".to_vec(),
            },
        )
        .to_bytes(DEFAULT_MAX_PAYLOAD)
        .expect("encodes");
        let mut r = FrameReader::new(&bytes[..bytes.len() - 1], DEFAULT_MAX_PAYLOAD);
        assert!(matches!(
            r.read_frame::<Request>(),
            Err(ReadError::UnexpectedEof)
        ));
    }

    #[test]
    fn malformed_frame_reports_its_id() {
        let mut bytes = Frame::new(42, Request::Ping)
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .expect("ok");
        bytes[7] = 0x77; // unknown kind
        let mut r = FrameReader::new(&bytes[..], DEFAULT_MAX_PAYLOAD);
        match r.read_frame::<Request>() {
            Err(ReadError::Malformed {
                id: Some(42),
                error: DecodeError::UnknownKind(_),
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

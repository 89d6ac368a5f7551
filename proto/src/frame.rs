//! Frames: a fixed 16-byte header and a payload holding one message.
//!
//! ```text
//! 0      4     5     6       8          12         16
//! +------+-----+-----+-------+----------+----------+---------------+
//! | SHLF | ver | flg | kind  |  req id  |   len    | payload (len) |
//! +------+-----+-----+-------+----------+----------+---------------+
//! ```
//! All integers are big-endian. The payload length is checked against the limit as soon as the
//! header is complete, before anything waits for or reserves room for the payload. Decoding has
//! three answers: a frame, "need more bytes" (`Ok(None)`), or a malformed peer (`Err`).

use crate::msg::Message;
use crate::wire::{Reader, Writer};

pub const MAGIC: [u8; 4] = *b"SHLF";
/// The frame layout version (the header's byte 4). Message-set versions are negotiated by
/// `Hello`; this byte changes only if the header itself ever does.
pub const FRAME_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;

/// Largest `Read`/`Write` data length either side will accept by default.
pub const DEFAULT_MAX_IO: u32 = 4 << 20;
/// Largest payload by default: room for the largest I/O plus a path and attributes.
pub const DEFAULT_MAX_PAYLOAD: u32 = DEFAULT_MAX_IO + (64 << 10);
/// No peer may announce more than this, whatever it asks for.
pub const HARD_MAX_PAYLOAD: u32 = 16 << 20;

/// Request id 0 is reserved for messages the server sends unasked (docs/PROTOCOL.md).
pub const UNSOLICITED_ID: u32 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("bad magic {0:02x?}: not a shelf peer")]
    BadMagic([u8; 4]),
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    #[error("reserved header flags set: {0:#04x}")]
    BadFlags(u8),
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("unknown message kind {0:#06x}")]
    UnknownKind(u16),
    #[error("a field runs past the end of the payload")]
    Truncated,
    #[error("{0} bytes left over after the last field")]
    TrailingBytes(usize),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("message of {len} bytes exceeds the payload limit of {max}")]
pub struct EncodeError {
    pub len: usize,
    pub max: u32,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub id: u32,
    pub len: u32,
}

impl Header {
    /// Parses and checks a header; `max_payload` is the limit this side enforces.
    pub fn parse(b: &[u8; HEADER_LEN], max_payload: u32) -> Result<Header, DecodeError> {
        let [m0, m1, m2, m3, version, flags, k0, k1, i0, i1, i2, i3, l0, l1, l2, l3] = *b;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(DecodeError::BadMagic([m0, m1, m2, m3]));
        }
        if version != FRAME_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        if flags != 0 {
            return Err(DecodeError::BadFlags(flags));
        }
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let max = max_payload.min(HARD_MAX_PAYLOAD);
        if len > max {
            return Err(DecodeError::TooLarge { len, max });
        }
        Ok(Header {
            kind: u16::from_be_bytes([k0, k1]),
            id: u32::from_be_bytes([i0, i1, i2, i3]),
            len,
        })
    }

    /// The request id of a header that may be malformed otherwise, so an error reply can
    /// still name the request it answers.
    pub fn peek_id(b: &[u8; HEADER_LEN]) -> u32 {
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
}

/// One message with its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<M> {
    pub id: u32,
    pub msg: M,
}

impl<M: Message> Frame<M> {
    pub fn new(id: u32, msg: M) -> Self {
        Frame { id, msg }
    }

    /// Decodes one frame from the front of `buf`. `Ok(None)`: no whole frame yet.
    /// `Ok(Some((frame, used)))`: `used` bytes were consumed. `Err`: the peer is broken.
    pub fn decode(buf: &[u8], max_payload: u32) -> Result<Option<(Self, usize)>, DecodeError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let h = Header::parse(head, max_payload)?;
        let end = HEADER_LEN + h.len as usize;
        let Some(payload) = buf.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        let msg = Self::decode_payload(&h, payload)?;
        Ok(Some((Frame { id: h.id, msg }, end)))
    }

    /// Decodes the payload that follows an already parsed header.
    pub fn decode_payload(h: &Header, payload: &[u8]) -> Result<M, DecodeError> {
        Self::decode_with(h, Reader::new(payload))
    }

    /// Like [`Frame::decode_payload`], for a payload in a buffer of its own: the message's
    /// file data are views of it, not copies.
    pub fn decode_shared(h: &Header, payload: &bytes::Bytes) -> Result<M, DecodeError> {
        Self::decode_with(h, Reader::shared(payload))
    }

    fn decode_with(h: &Header, mut r: Reader<'_>) -> Result<M, DecodeError> {
        let msg = M::decode_body(h.kind, &mut r)?;
        r.finish()?;
        Ok(msg)
    }

    /// Appends the whole frame to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>, max_payload: u32) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(FRAME_VERSION);
        out.push(0);
        out.extend_from_slice(&self.msg.kind().to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        self.msg.encode_body(&mut Writer::new(out));
        let len = out.len() - start - HEADER_LEN;
        let max = max_payload.min(HARD_MAX_PAYLOAD);
        match u32::try_from(len) {
            Ok(len32) if len32 <= max => {
                out[start + 12..start + 16].copy_from_slice(&len32.to_be_bytes());
                Ok(())
            }
            _ => {
                out.truncate(start);
                Err(EncodeError { len, max })
            }
        }
    }

    /// The whole frame as a new buffer.
    pub fn to_bytes(&self, max_payload: u32) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out, max_payload)?;
        Ok(out)
    }
}

impl Frame<crate::msg::Reply> {
    /// Like [`Frame::encode`], but leaves out the data of a `Reply::Data` (its last field,
    /// the only one that can be large) and returns it: the frame on the wire is what was
    /// appended to `out` followed by the returned bytes. Other replies are encoded whole and
    /// return nothing.
    pub fn encode_split<'a>(
        &'a self,
        out: &mut Vec<u8>,
        max_payload: u32,
    ) -> Result<&'a [u8], EncodeError> {
        let crate::msg::Reply::Data { attr, data } = &self.msg else {
            self.encode(out, max_payload)?;
            return Ok(&[]);
        };
        let head = crate::msg::Reply::Data {
            attr: *attr,
            data: bytes::Bytes::new(),
        };
        encode_with_tail(self.id, head, data, out, max_payload)?;
        Ok(data)
    }
}

impl Frame<crate::msg::Request> {
    /// [`Frame::encode_split`] for requests: a `Request::Write`'s data (its last field) is
    /// left out and returned, so a client sends it from its own buffer.
    pub fn encode_split<'a>(
        &'a self,
        out: &mut Vec<u8>,
        max_payload: u32,
    ) -> Result<&'a [u8], EncodeError> {
        let crate::msg::Request::Write { path, offset, data } = &self.msg else {
            self.encode(out, max_payload)?;
            return Ok(&[]);
        };
        let head = crate::msg::Request::Write {
            path: path.clone(),
            offset: *offset,
            data: bytes::Bytes::new(),
        };
        encode_with_tail(self.id, head, data, out, max_payload)?;
        Ok(data)
    }
}

/// Appends the frame of `head`, a message whose last field is an empty byte string, as if
/// that field held `tail`: lengths say `tail` follows, which the caller sends itself. On
/// error `out` is left as it was.
fn encode_with_tail<M: Message>(
    id: u32,
    head: M,
    tail: &[u8],
    out: &mut Vec<u8>,
    max_payload: u32,
) -> Result<(), EncodeError> {
    let start = out.len();
    Frame::new(id, head).encode(out, max_payload)?;
    let len = out.len() - start - HEADER_LEN + tail.len();
    let max = max_payload.min(HARD_MAX_PAYLOAD);
    let (Ok(len32), Ok(tail_len)) = (u32::try_from(len), u32::try_from(tail.len())) else {
        out.truncate(start);
        return Err(EncodeError { len, max });
    };
    if len32 > max {
        out.truncate(start);
        return Err(EncodeError { len, max });
    }
    out[start + 12..start + 16].copy_from_slice(&len32.to_be_bytes());
    let at = out.len() - 4;
    out[at..].copy_from_slice(&tail_len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Reply, Request};

    #[test]
    fn a_split_reply_is_the_whole_frame() {
        use crate::msg::{Attr, FileKind, Timestamp};
        let attr = Attr {
            ino: 7,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            size: 5,
            blocks: 8,
            blksize: 4096,
            atime: Timestamp::new(1, 2),
            mtime: Timestamp::new(3, 4),
            ctime: Timestamp::new(5, 6),
            btime: Timestamp::new(7, 8),
        };
        let replies = [
            Reply::Data {
                attr,
                data: bytes::Bytes::from_static(b"hello"),
            },
            Reply::Data {
                attr,
                data: bytes::Bytes::new(),
            },
            Reply::Attr(attr),
            Reply::Pong,
        ];
        for reply in replies {
            let frame = Frame::new(9, reply);
            let whole = frame.to_bytes(DEFAULT_MAX_PAYLOAD).expect("encodes");
            let mut head = vec![0xee];
            let tail = frame
                .encode_split(&mut head, DEFAULT_MAX_PAYLOAD)
                .expect("encodes");
            assert_eq!([&head[1..], tail].concat(), whole, "{:?}", frame.msg);
        }
        let big = Frame::new(
            1,
            Reply::Data {
                attr,
                data: vec![0; 100].into(),
            },
        );
        let mut out = vec![1, 2];
        assert!(big.encode_split(&mut out, 64).is_err());
        assert_eq!(out, [1, 2], "nothing is left behind on failure");
    }

    #[test]
    fn a_split_request_is_the_whole_frame() {
        let requests = [
            Request::Write {
                path: b"a/b".to_vec(),
                offset: 1 << 40,
                data: bytes::Bytes::from_static(b"hello"),
            },
            Request::Write {
                path: Vec::new(),
                offset: 0,
                data: bytes::Bytes::new(),
            },
            Request::Ping,
        ];
        for req in requests {
            let frame = Frame::new(9, req);
            let whole = frame.to_bytes(DEFAULT_MAX_PAYLOAD).expect("encodes");
            let mut head = vec![0xee];
            let tail = frame
                .encode_split(&mut head, DEFAULT_MAX_PAYLOAD)
                .expect("encodes");
            assert_eq!([&head[1..], tail].concat(), whole, "{:?}", frame.msg);
        }
        let big = Frame::new(
            1,
            Request::Write {
                path: b"f".to_vec(),
                offset: 0,
                data: vec![0; 100].into(),
            },
        );
        let mut out = vec![1, 2];
        assert!(big.encode_split(&mut out, 64).is_err());
        assert_eq!(out, [1, 2], "nothing is left behind on failure");
    }

    #[test]
    fn ping_frame_bytes() {
        let bytes = Frame::new(7, Request::Ping)
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .expect("encodes");
        assert_eq!(
            bytes,
            [b'S', b'H', b'L', b'F', 1, 0, 0x00, 0x02, 0, 0, 0, 7, 0, 0, 0, 0]
        );
    }

    #[test]
    fn oversize_length_refused_from_header_alone() {
        let mut head = *b"SHLF\x01\x00\x00\x02\x00\x00\x00\x01\xff\xff\xff\xff";
        assert_eq!(
            Frame::<Request>::decode(&head, DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
        head[0] = b'X';
        assert!(matches!(
            Frame::<Request>::decode(&head, 100),
            Err(DecodeError::BadMagic(_))
        ));
    }

    #[test]
    fn encode_refuses_oversize_and_leaves_buffer() {
        let msg = Reply::Target(vec![0; 200]);
        let mut out = vec![1, 2, 3];
        assert!(Frame::new(1, msg).encode(&mut out, 100).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn partial_frames_need_more() {
        let bytes = Frame::new(
            9,
            Request::Stat {
                path: b"a/b".to_vec(),
            },
        )
        .to_bytes(DEFAULT_MAX_PAYLOAD)
        .expect("encodes");
        for cut in 0..bytes.len() {
            assert_eq!(
                Frame::<Request>::decode(&bytes[..cut], DEFAULT_MAX_PAYLOAD),
                Ok(None)
            );
        }
        let (f, used) = Frame::<Request>::decode(&bytes, DEFAULT_MAX_PAYLOAD)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(
            f.msg,
            Request::Stat {
                path: b"a/b".to_vec()
            }
        );
    }

    #[test]
    fn request_kind_in_reply_position_is_unknown() {
        let bytes = Frame::new(1, Request::Ping)
            .to_bytes(DEFAULT_MAX_PAYLOAD)
            .expect("encodes");
        assert_eq!(
            Frame::<Reply>::decode(&bytes, DEFAULT_MAX_PAYLOAD),
            Err(DecodeError::UnknownKind(0x0002))
        );
    }
}

//! Primitive field encoding: big-endian integers and length-prefixed byte strings.
//!
//! `Reader` is the only code that looks at untrusted payload bytes. Every method checks what
//! remains before it reads, so a lying length is a `DecodeError`, never a panic or an
//! allocation larger than the payload that already arrived.

use bytes::Bytes;

use crate::frame::DecodeError;

/// Reads fields from one frame's payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The payload as a buffer of its own, when it was read into one: [`Reader::blob`] then
    /// hands out views of it instead of copies.
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, shared: None }
    }

    /// Reads a payload held in its own buffer, whose blobs are views of it.
    pub fn shared(payload: &'a Bytes) -> Self {
        Reader {
            buf: payload,
            shared: Some(payload),
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean is neither 0 nor 1")),
        }
    }

    /// A `u32` length followed by that many bytes.
    pub fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    /// Like `bytes`, for file data: a view of the payload when it has a buffer of its own
    /// ([`Reader::shared`]), so a large read or write is never copied out of its frame.
    pub fn blob(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let data = self.take(len)?;
        Ok(match self.shared {
            Some(whole) => whole.slice_ref(data),
            None => Bytes::copy_from_slice(data),
        })
    }

    /// Like `bytes`, but the content must be UTF-8 (used only for human-readable text).
    pub fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError::Invalid("text is not UTF-8"))
    }

    /// A `u32` element count for a list whose elements each take at least `min_size` bytes.
    /// The count is checked against what remains so a hostile count cannot reserve memory.
    pub fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    /// Trailing bytes after the last field mean the peer and we disagree on the layout.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Appends fields to a frame being built.
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }

    /// Lengths above `u32::MAX` cannot occur: the frame limit is far below it and
    /// `Frame::encode` refuses oversize payloads. Saturating keeps this total anyway.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }

    pub fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lying_length_is_truncated_not_panic() {
        let buf = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            Reader::new(&buf).bytes(),
            Err(DecodeError::Truncated)
        ));
    }

    #[test]
    fn hostile_count_refused_before_allocation() {
        let buf = [0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&buf).count(8),
            Err(DecodeError::Truncated)
        ));
    }

    #[test]
    fn finish_rejects_leftovers() {
        let buf = [1, 2];
        let mut r = Reader::new(&buf);
        r.u8().expect("one byte is there");
        assert!(matches!(r.finish(), Err(DecodeError::TrailingBytes(1))));
    }

    #[test]
    fn integers_are_big_endian() {
        let mut v = Vec::new();
        let mut w = Writer::new(&mut v);
        w.u32(0x0102_0304);
        w.u16(0x0506);
        assert_eq!(v, [1, 2, 3, 4, 5, 6]);
    }
}

//! Decodes arbitrary bytes as a request frame and as a reply frame.
//!
//! Beyond "never panics", it checks that decoding is exact: whatever decodes re-encodes to
//! the same bytes (bar an `Error` reply's code, since unknown numbers read as EIO), decodes
//! again to the same message with the same consumed length, and `FrameReader` over the same
//! bytes gives the same answer as `Frame::decode`.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use shelf_proto::{
    Frame, FrameReader, Message, ReadError, Reply, Request, DEFAULT_MAX_PAYLOAD, HEADER_LEN,
};

const MAX: u32 = DEFAULT_MAX_PAYLOAD;

fuzz_target!(|data: &[u8]| {
    check::<Request>(data, |_| false);
    check::<Reply>(data, |m| matches!(m, Reply::Error { .. }));
});

/// `code_may_differ`: the message carries a `Code` right after the header, whose wire
/// number is canonicalised on decode (docs/PROTOCOL.md, "Errors").
fn check<M: Message + Debug + PartialEq>(data: &[u8], code_may_differ: fn(&M) -> bool) {
    let decoded = Frame::<M>::decode(data, MAX);
    let streamed = FrameReader::new(data, MAX).read_frame::<M>();
    match (&decoded, streamed) {
        (Ok(Some((f, _))), Ok(Some(g))) => assert_eq!(*f, g, "reader and decode disagree"),
        (Ok(None), Ok(None)) => assert!(data.is_empty(), "clean EOF only on no bytes"),
        (Ok(None), Err(ReadError::UnexpectedEof)) => assert!(!data.is_empty()),
        (Err(e), Err(ReadError::Malformed { error, id })) => {
            assert_eq!(*e, error, "reader and decode disagree");
            assert_eq!(
                id,
                data.first_chunk::<HEADER_LEN>()
                    .map(shelf_proto::Header::peek_id)
            );
        }
        (d, s) => panic!("decode gave {d:?} but FrameReader gave {s:?}"),
    }

    let Ok(Some((frame, used))) = decoded else {
        return;
    };
    assert!((HEADER_LEN..=data.len()).contains(&used));
    assert_eq!(Frame::<M>::decode(&data[..used - 1], MAX), Ok(None));

    let bytes = frame
        .to_bytes(MAX)
        .expect("a frame that decoded under MAX re-encodes under MAX");
    assert_eq!(bytes.len(), used, "re-encoding changed the length");
    if code_may_differ(&frame.msg) {
        assert_eq!(bytes[..HEADER_LEN], data[..HEADER_LEN]);
        assert_eq!(bytes[HEADER_LEN + 4..], data[HEADER_LEN + 4..used]);
    } else {
        assert_eq!(
            bytes,
            data[..used],
            "decoding accepted a non-canonical encoding"
        );
    }

    let (again, used_again) = Frame::<M>::decode(&bytes, MAX)
        .expect("re-encoded frame is valid")
        .expect("re-encoded frame is complete");
    assert_eq!(again, frame);
    assert_eq!(used_again, used);
}

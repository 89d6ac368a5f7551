//! Scripted fake servers for tests of the connection layer: each plays one misbehaviour
//! (replies out of order, never answers, refuses) that a real server cannot be made to.

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use shelf_proto::{
    Frame, FrameReader, HelloReply, Reply, Request, DEFAULT_MAX_IO, DEFAULT_MAX_PAYLOAD,
    PROTOCOL_VERSION,
};

use super::ConnectOptions;

/// The server side of a fake connection.
pub(crate) struct Peer {
    reader: FrameReader<UnixStream>,
    writer: UnixStream,
    scratch: Vec<u8>,
}

impl Peer {
    /// The next request, `None` when the client hung up.
    pub(crate) fn recv(&mut self) -> Option<Frame<Request>> {
        self.reader.read_frame().ok().flatten()
    }

    pub(crate) fn send(&mut self, id: u32, reply: Reply) {
        let _ = shelf_proto::write_frame(
            &mut self.writer,
            &Frame::new(id, reply),
            DEFAULT_MAX_PAYLOAD,
            &mut self.scratch,
        );
    }

    /// Reads the client's hello and accepts it.
    pub(crate) fn accept_hello(&mut self) {
        let hello = self.recv().expect("the client sends hello first");
        assert!(matches!(hello.msg, Request::Hello(_)), "{hello:?}");
        self.send(hello.id, Reply::Hello(hello_reply()));
    }
}

pub(crate) fn hello_reply() -> HelloReply {
    HelloReply {
        version: PROTOCOL_VERSION,
        max_payload: DEFAULT_MAX_PAYLOAD,
        max_io: DEFAULT_MAX_IO,
        features: 0,
        agent: "fake".into(),
        admitted: None,
    }
}

/// Runs `script` as the server of a new socket pair; returns the client end.
pub(crate) fn fake(script: impl FnOnce(Peer) + Send + 'static) -> (UnixStream, JoinHandle<()>) {
    let (near, far) = UnixStream::pair().expect("socketpair");
    // A script that misbehaves must still end, so its test cannot hang on it.
    far.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let writer = far.try_clone().expect("clone");
    let peer = Peer {
        reader: FrameReader::new(far, DEFAULT_MAX_PAYLOAD),
        writer,
        scratch: Vec::new(),
    };
    let handle = std::thread::spawn(move || script(peer));
    (near, handle)
}

/// Options with short timeouts, so a failing test fails fast.
pub(crate) fn quick_opts() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..ConnectOptions::new("fake")
    }
}

//! The byte streams a [`Connection`](super::Connection) runs over: TCP for real servers, Unix
//! socket pairs for the in-process `shelf_testkit::Loopback` and tests.
//!
//! A connection needs three views of one socket at once: the writer (behind a mutex), the
//! reading half, and a handle that can shut the socket down from outside, which is how a
//! blocked reader is woken when the connection is given up, and ask whether anything arrived.
//! Sockets give all three through `try_clone`, `shutdown` and `poll`; this trait names exactly
//! that, plus sending without waiting ([`Stream::send_now`], [`Stream::flush_now`]).
//!
//! A [`TlsStream`] is one rustls state machine rather than a socket: its clones share it, its
//! `readable_now` counts plaintext already decrypted, and its `send_now` encrypts and queues
//! records that `flush_now` finishes sending (shelf-secure's stream module says why that
//! cannot hang).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use shelf_secure::TlsStream;

pub trait Stream: Read + Write + Send + 'static {
    /// Another handle to the same socket.
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>>;
    /// Ends both directions, waking any thread blocked on the socket. Errors are ignored: the
    /// socket may already be gone, which is the state wanted.
    fn shutdown_both(&self);
    /// Bounds blocking reads; `None` waits for ever.
    fn set_read_deadline(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds blocking writes; `None` waits for ever.
    fn set_write_deadline(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The socket's descriptor, for `poll`.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Whether a read would not block now: bytes, the end of the stream or an error wait.
    fn readable_now(&self) -> bool {
        crate::sys::readable_now(self.fd())
    }
    /// Sends what goes now without waiting, and says how much of `buf` it took; a closed peer
    /// is an error, never SIGPIPE.
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        crate::sys::send_now(self.fd(), buf)
    }
    /// Sends what an earlier `send_now` took but could not put on the socket yet; true once
    /// nothing is left. A socket keeps nothing back.
    fn flush_now(&self) -> io::Result<bool> {
        Ok(true)
    }
}

impl Stream for TlsStream {
    fn fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.clone()))
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn set_read_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout);
        Ok(())
    }
    fn set_write_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }
    fn readable_now(&self) -> bool {
        TlsStream::readable_now(self)
    }
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        TlsStream::send_now(self, buf)
    }
    fn flush_now(&self) -> io::Result<bool> {
        TlsStream::flush_now(self)
    }
}

/// Plain sockets: std gives TCP and Unix streams the same methods under the same names.
macro_rules! plain_socket_stream {
    ($($socket:ty),*) => {$(
        impl Stream for $socket {
            fn fd(&self) -> BorrowedFd<'_> {
                self.as_fd()
            }
            fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
                Ok(Box::new(self.try_clone()?))
            }
            fn shutdown_both(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
            fn set_read_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.set_read_timeout(timeout)
            }
            fn set_write_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.set_write_timeout(timeout)
            }
        }
    )*};
}

plain_socket_stream!(TcpStream, UnixStream);

impl Stream for Box<dyn Stream> {
    fn fd(&self) -> BorrowedFd<'_> {
        (**self).fd()
    }
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        (**self).try_clone_stream()
    }
    fn shutdown_both(&self) {
        (**self).shutdown_both()
    }
    fn set_read_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_deadline(timeout)
    }
    fn set_write_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_write_deadline(timeout)
    }
    fn readable_now(&self) -> bool {
        (**self).readable_now()
    }
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        (**self).send_now(buf)
    }
    fn flush_now(&self) -> io::Result<bool> {
        (**self).flush_now()
    }
}

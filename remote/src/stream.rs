//! The byte streams a [`Connection`](super::Connection) runs over: TCP for real servers, Unix
//! socket pairs for the in-process `shelf_testkit::Loopback` and tests.
//!
//! A connection needs three views of one socket at once: the writer (behind a mutex), the
//! reading half, and a handle that can shut the socket down from outside, which is how a
//! blocked reader is woken when the connection is given up, and ask whether anything arrived.
//! Sockets give all three through `try_clone`, `shutdown` and `poll`; this trait names exactly
//! that.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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
}

impl Stream for TcpStream {
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

impl Stream for UnixStream {
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
}

//! The socket calls the connection needs that `std` does not offer, through `rustix` (no
//! `unsafe` here).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::SendFlags;

pub use rustix::event::PollFlags as Events;

/// Waits up to `timeout` for `events` on `fd`, and returns those that came (empty: none yet,
/// also when a signal cut the wait short).
pub fn poll_fd(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<PollFlags> {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(rustix::io::Errno::INTR) => Ok(PollFlags::empty()),
        Ok(_) => Ok(fds[0].revents()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a read of `fd` would not block now (bytes, end of stream or an error wait).
pub fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_fd(fd, PollFlags::IN, Duration::ZERO).is_ok_and(|r| !r.is_empty())
}

/// Sends what the socket `fd` takes now, without waiting; a closed peer is an error, never
/// SIGPIPE.
pub fn send_now(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        fd,
        buf,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_once_bytes_or_hang_up_arrive() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        assert!(!readable_now(b.as_fd()), "nothing sent yet");
        a.write_all(b"x").expect("write");
        assert!(readable_now(b.as_fd()), "a byte waits");
        let (a, b) = UnixStream::pair().expect("pair");
        drop(a);
        assert!(readable_now(b.as_fd()), "the end of the stream waits");
    }

    #[test]
    fn send_now_reports_a_closed_peer_without_sigpipe() {
        let (a, b) = UnixStream::pair().expect("pair");
        assert_eq!(send_now(a.as_fd(), b"abc").expect("send"), 3);
        drop(b);
        let err = send_now(a.as_fd(), b"abc").expect_err("peer gone");
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn send_now_does_not_wait_for_room() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let big = vec![0u8; 1 << 20];
        let mut sent = 0;
        loop {
            match send_now(a.as_fd(), &big) {
                Ok(n) => sent += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
            assert!(sent < 64 << 20, "a socket buffer is not 64 MiB");
        }
        let ready = poll_fd(a.as_fd(), PollFlags::OUT, Duration::from_millis(10)).expect("poll");
        assert!(ready.is_empty(), "no room while nobody reads");
    }
}

//! The server's one watcher (`watch.rs`, point 2): a process forked by the shelfd parent at
//! start, holding the one inotify instance; each connection process talks to it over a
//! socket pair whose other end the parent sends it ([`Watcher::connect`], `SCM_RIGHTS` over
//! the parent's channel). Messages: `link.rs`.
//!
//! The watcher is one thread with one `poll` over the parent's channel, the instance and every
//! connection's socket; after it sent notices it leaves the instance unread for a moment
//! (`NOTICE_HOLD`), so a burst of changes costs it and each reader one wake-up per moment, not
//! one per change. It never blocks on a connection: a message that does not fit in a
//! connection's socket buffer is dropped and the connection is told `L` (lost) once its socket
//! has room, and a connection that hangs up loses its watches. It ends when the parent's
//! channel closes (the parent went); [`run`] is the loop, so tests run it on a thread.

use std::collections::{HashMap, HashSet};
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use super::link::{ChangeBatch, MSG_MAX};
use super::{Event, Instance, Sub};
use crate::library::Library;
use crate::relpath::RelPath;

/// The parent's handle on its watcher process.
#[derive(Debug)]
pub struct Watcher {
    channel: OwnedFd,
    pid: libc::pid_t,
}

impl Watcher {
    /// Forks the watcher. `close_in_child` are descriptors of the parent's the watcher must
    /// not keep (the listener); `setup` runs in it first (the parent's signal handling off).
    /// The caller must be single-threaded, as for every fork.
    pub fn spawn(
        lib: &Library,
        close_in_child: &[RawFd],
        setup: impl FnOnce(),
    ) -> io::Result<Watcher> {
        let (parent_end, watcher_end) = seqpacket_pair()?;
        // SAFETY: the parent is single-threaded (checked in `listen::run`), so the child is a
        // complete copy and may run any code; it never returns (it ends in _exit).
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                for &fd in close_in_child {
                    // SAFETY: the forked child's own copies, never used again here.
                    unsafe { libc::close(fd) };
                }
                drop(parent_end);
                // So `ps` and the tests tell it from the connection processes.
                // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
                unsafe { libc::prctl(libc::PR_SET_NAME, c"shelfd-watch".as_ptr()) };
                setup();
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(watcher_end, lib)
                })) {
                    Ok(()) => 0,
                    Err(_) => 101,
                };
                // SAFETY: ends this process without the parent's atexit handlers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                drop(watcher_end);
                tracing::info!(pid, "change watcher started");
                Ok(Watcher {
                    channel: parent_end,
                    pid,
                })
            }
        }
    }

    /// The watcher process's id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The parent's end of the channel, which a forked connection process must close.
    pub fn channel_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }

    /// A socket for one new connection process, whose other end went to the watcher; `None`
    /// if the watcher cannot take it (it went): that connection is then refused watches.
    pub fn connect(&self) -> Option<OwnedFd> {
        let (conn_end, watcher_end) = seqpacket_pair().ok()?;
        send_fd(&self.channel, watcher_end.as_fd()).ok()?;
        Some(conn_end)
    }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (message boundaries kept), close-on-exec.
fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn send_fd(channel: &OwnedFd, fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    loop {
        match rustix::net::sendmsg(
            channel,
            &[IoSlice::new(b"c")],
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the watcher received on its channel: new connections' sockets, or the end.
fn recv_fds(channel: &OwnedFd) -> Option<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 4];
    let got = loop {
        match rustix::net::recvmsg(
            channel,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Some(Vec::new()),
            Err(_) => return None,
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return None;
    }
    Some(fds)
}

/// One connection, as the watcher knows it.
struct Conn {
    socket: OwnedFd,
    wds: HashSet<i32>,
    /// A message did not fit: `L` is owed as soon as the socket has room.
    owes_lost: bool,
    gone: bool,
}

impl Conn {
    /// Sends `msg` without waiting; one that does not fit makes `L` owed.
    fn tell(&mut self, msg: &[u8]) {
        if self.owes_lost || self.gone {
            return;
        }
        match rustix::net::send(&self.socket, msg, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(_) => {}
            Err(Errno::AGAIN) => self.owes_lost = true,
            Err(Errno::INTR) => self.tell(msg),
            Err(_) => self.gone = true,
        }
    }

    fn pay_lost(&mut self) {
        if !self.owes_lost || self.gone {
            return;
        }
        match rustix::net::send(
            &self.socket,
            b"L",
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Ok(_) => self.owes_lost = false,
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(_) => self.gone = true,
        }
    }
}

/// How long the instance is left unread after the watcher sent notices. A change that follows
/// a quiet spell goes out at once; those that follow it within the hold go out together when
/// it ends. During a burst (an `rm -r`, a `tar x`: a change every 0.1-0.2 ms) that wakes this
/// process, and each watching connection's reader, once per hold instead of once per change,
/// CPU the changes' own requests need on a small machine. Nothing is told later than a
/// client would see it anyway: a waiting `Changes` collects for `CHANGE_SETTLE` (2 ms, in
/// `conn.rs`) after the first notice before it answers.
const NOTICE_HOLD: Duration = Duration::from_millis(1);

/// The watcher's loop (module docs); returns when the parent's channel closes.
pub fn run(channel: OwnedFd, lib: &Library) {
    let instance = match Instance::new() {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!("cannot watch for changes (inotify): {e}; clients keep their TTL");
            None
        }
    };
    serve(channel, lib, instance);
}

fn serve(channel: OwnedFd, lib: &Library, mut instance: Option<Instance>) {
    let mut conns: HashMap<Sub, Conn> = HashMap::new();
    let mut next: Sub = 1;
    let mut buf = vec![0u8; MSG_MAX];
    // Until when the instance is left unread after notices went out (`NOTICE_HOLD`).
    let mut hold_until: Option<Instant> = None;
    loop {
        let mut fds = vec![pollfd(channel.as_raw_fd(), libc::POLLIN)];
        let now = Instant::now();
        let held = hold_until.filter(|&t| t > now);
        let inotify_at = match (&instance, held) {
            (Some(i), None) => {
                fds.push(pollfd(i.as_fd().as_raw_fd(), libc::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        // A held instance is looked at again when the hold ends (rounded up to a whole
        // millisecond, poll's unit).
        let timeout = held.map_or(-1, |t| {
            i32::try_from((t - now).as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let first_conn = fds.len();
        let order: Vec<Sub> = conns.keys().copied().collect();
        for sub in &order {
            let c = &conns[sub];
            let events = libc::POLLIN | if c.owes_lost { libc::POLLOUT } else { 0 };
            fds.push(pollfd(c.socket.as_raw_fd(), events));
        }
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        if fds[0].revents != 0 {
            match recv_fds(&channel) {
                None => return,
                Some(new) => {
                    for socket in new {
                        let _ = rustix::io::ioctl_fionbio(&socket, true);
                        conns.insert(
                            next,
                            Conn {
                                socket,
                                wds: HashSet::new(),
                                owes_lost: false,
                                gone: false,
                            },
                        );
                        next += 1;
                    }
                }
            }
        }
        let readable = inotify_at.is_some_and(|k| fds[k].revents != 0);
        if let Some(i) = instance.as_mut().filter(|_| readable) {
            let mut events = Vec::new();
            let mut gone = Vec::new();
            i.take_in(&mut events, &mut gone);
            if !events.is_empty() {
                hold_until = Some(Instant::now() + NOTICE_HOLD);
            }
            for (wd, subs) in gone {
                for s in subs {
                    if let Some(c) = conns.get_mut(&s) {
                        c.wds.remove(&wd);
                    }
                }
            }
            let mut batches: HashMap<Sub, ChangeBatch> = HashMap::new();
            for e in events {
                match e {
                    Event::Changed { path, subs } => {
                        for s in subs {
                            batches
                                .entry(s)
                                .or_insert_with(ChangeBatch::new)
                                .push(&path);
                        }
                    }
                    Event::Overflow => {
                        for c in conns.values_mut() {
                            c.owes_lost = true;
                        }
                    }
                }
            }
            for (s, batch) in batches {
                if let Some(c) = conns.get_mut(&s) {
                    for msg in batch.messages() {
                        c.tell(&msg);
                    }
                }
            }
        }
        for (k, sub) in order.iter().enumerate() {
            let revents = fds[first_conn + k].revents;
            let Some(c) = conns.get_mut(sub) else {
                continue;
            };
            if revents & libc::POLLOUT != 0 {
                c.pay_lost();
            }
            if revents & libc::POLLIN != 0 {
                serve_conn(*sub, c, instance.as_mut(), lib, &mut buf);
            } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                c.gone = true;
            }
        }
        let gone: Vec<Sub> = conns
            .iter()
            .filter(|(_, c)| c.gone)
            .map(|(s, _)| *s)
            .collect();
        for s in gone {
            let c = conns.remove(&s).expect("present");
            if let Some(i) = instance.as_mut() {
                i.drop_sub(s, c.wds);
            }
        }
    }
}

/// Answers the `Watch` messages waiting on one connection's socket.
fn serve_conn(
    sub: Sub,
    c: &mut Conn,
    mut instance: Option<&mut Instance>,
    lib: &Library,
    buf: &mut [u8],
) {
    loop {
        let n = match rustix::net::recv(&c.socket, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                c.gone = true;
                return;
            }
            Ok((n, _)) => n,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return,
            Err(_) => {
                c.gone = true;
                return;
            }
        };
        let msg = &buf[..n];
        if msg.len() < 9 || msg[0] != b'W' {
            // Only our own connection processes hold these sockets: a bad message is a bug.
            tracing::warn!("a malformed message to the watcher");
            c.gone = true;
            return;
        }
        let id: [u8; 4] = msg[1..5].try_into().expect("4 bytes");
        let limit = u32::from_le_bytes(msg[5..9].try_into().expect("4 bytes")) as usize;
        let ok = match (instance.as_deref_mut(), RelPath::from_bytes(&msg[9..])) {
            (Some(i), Ok(path)) => {
                let known = i
                    .by_path
                    .get(path.as_bytes())
                    .is_some_and(|wd| c.wds.contains(wd));
                known
                    || (c.wds.len() < limit
                        && i.add(lib, &path, sub).map(|wd| c.wds.insert(wd)).is_some())
            }
            _ => false,
        };
        let mut answer = [b'A', 0, 0, 0, 0, 0];
        answer[1..5].copy_from_slice(&id);
        answer[5] = u8::from(ok);
        c.tell(&answer);
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Runs the watcher on a thread of this process instead of its own (tests): the channel's
/// other end, to hand out connection sockets with [`connect_to`], and its inotify
/// descriptor, to count its watches.
#[cfg(test)]
pub(crate) fn on_thread(lib: Library) -> (OwnedFd, RawFd, std::thread::JoinHandle<()>) {
    let (parent_end, watcher_end) = seqpacket_pair().expect("socket pair");
    let instance = Instance::new().expect("inotify");
    let fd = instance.as_fd().as_raw_fd();
    let t = std::thread::spawn(move || serve(watcher_end, &lib, Some(instance)));
    (parent_end, fd, t)
}

/// [`Watcher::connect`] for a channel of [`on_thread`].
#[cfg(test)]
pub(crate) fn connect_to(channel: &OwnedFd) -> OwnedFd {
    let (conn_end, watcher_end) = seqpacket_pair().expect("socket pair");
    send_fd(channel, watcher_end.as_fd()).expect("send");
    conn_end
}

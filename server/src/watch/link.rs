//! [`Link`]: a connection process's end of its socket to the server's watcher (`watcher.rs`):
//! it sends `Watch` requests, and a thread of its own takes the answers and the changes in.
//!
//! Messages (one per `SOCK_SEQPACKET` send, integers little-endian):
//! - to the watcher: `W`, id `u32`, limit `u32`, path: watch the directory `path` for this
//!   connection, unless it watches `limit` already;
//! - from it: `A`, id `u32`, ok `u8` (the answer); `C`, then for each entry that changed its
//!   path's length `u16` and the path (a burst's changes go together, [`ChangeBatch`], so
//!   they fit the socket's buffer: one message per path would take about 1 KiB of it each);
//!   `L` (changes may have been lost).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, Shutdown};

use super::{lock, Pending};
use crate::relpath::RelPath;

/// How long a `Watch` waits for the watcher's answers before it counts the rest as refused.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// Longest message to the watcher: a tag, two integers and a path (`PATH_MAX`).
pub(crate) const MSG_MAX: usize = 16 + crate::relpath::PATH_MAX;
/// Longest `C` message from it: what the reader's buffer takes.
const BATCH_MAX: usize = 64 << 10;

/// The `C` messages for one connection, filled path by path in the order of the changes.
pub(crate) struct ChangeBatch {
    full: Vec<Vec<u8>>,
    open: Vec<u8>,
}

impl ChangeBatch {
    pub(crate) fn new() -> ChangeBatch {
        ChangeBatch {
            full: Vec::new(),
            open: vec![b'C'],
        }
    }

    /// Adds `path` (at most `PATH_MAX` bytes, so its length fits a `u16`).
    pub(crate) fn push(&mut self, path: &[u8]) {
        let len = u16::try_from(path.len()).expect("a path within PATH_MAX");
        if self.open.len() + 2 + path.len() > BATCH_MAX {
            self.full
                .push(std::mem::replace(&mut self.open, vec![b'C']));
        }
        self.open.extend_from_slice(&len.to_le_bytes());
        self.open.extend_from_slice(path);
    }

    /// The messages, oldest first.
    pub(crate) fn messages(mut self) -> Vec<Vec<u8>> {
        if self.open.len() > 1 {
            self.full.push(self.open);
        }
        self.full
    }
}

/// The paths of a `C` message's body; `None` if it is cut short.
fn batch_paths(mut body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    while !body.is_empty() {
        let (len, rest) = body.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        paths.push(rest.get(..len)?.to_vec());
        body = &rest[len..];
    }
    Some(paths)
}

/// See the module docs.
pub struct Link {
    socket: Arc<OwnedFd>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Directories the watcher said yes to (for `Watches::count`).
    watched: AtomicUsize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    pending: Pending,
    answers: HashMap<u32, bool>,
    /// The watcher hung up (it died, or this connection is ending).
    closed: bool,
}

impl Link {
    pub(crate) fn new(socket: OwnedFd) -> Link {
        Link {
            socket: Arc::new(socket),
            shared: Arc::default(),
            next_id: AtomicU32::new(1),
            reader: Mutex::new(None),
            watched: AtomicUsize::new(0),
        }
    }

    pub(crate) fn watch(&self, paths: &[RelPath], limit: usize) -> Vec<bool> {
        let mut answers = vec![false; paths.len()];
        if !self.start_reader() {
            return answers;
        }
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut ids = Vec::with_capacity(paths.len());
        for path in paths {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut msg = Vec::with_capacity(9 + path.as_bytes().len());
            msg.push(b'W');
            msg.extend_from_slice(&id.to_le_bytes());
            msg.extend_from_slice(&limit.to_le_bytes());
            msg.extend_from_slice(path.as_bytes());
            if send(&self.socket, &msg).is_err() {
                break;
            }
            ids.push(id);
        }
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut state = lock(&self.shared.state);
        for (k, id) in ids.into_iter().enumerate() {
            loop {
                if let Some(ok) = state.answers.remove(&id) {
                    answers[k] = ok;
                    break;
                }
                let now = Instant::now();
                if state.closed || now >= deadline {
                    break;
                }
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let yes = answers.iter().filter(|&&a| a).count();
        self.watched.fetch_add(yes, Ordering::Relaxed);
        answers
    }

    pub(crate) fn count(&self) -> usize {
        self.watched.load(Ordering::Relaxed)
    }

    pub(crate) fn changes(&self, wait: Duration, ending: &AtomicBool) -> (Vec<Vec<u8>>, bool) {
        if lock(&self.reader).is_none() {
            return (Vec::new(), false);
        }
        let deadline = Instant::now() + wait;
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(batch) = state.pending.batch() {
                return batch;
            }
            let now = Instant::now();
            // A closed link waits out the time too: its client would only ask again.
            if now >= deadline || ending.load(Ordering::SeqCst) {
                return (Vec::new(), false);
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, (deadline - now).min(super::SLICE))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Hangs up on the watcher (which drops this connection's watches) and joins the thread.
    pub(crate) fn end(&self) {
        let _ = rustix::net::shutdown(self.socket.as_fd(), Shutdown::Both);
        if let Some(t) = lock(&self.reader).take() {
            let _ = t.join();
        }
        lock(&self.shared.state).closed = true;
        self.shared.changed.notify_all();
    }

    /// Starts the thread that takes the watcher's messages in, once; false if it cannot run.
    fn start_reader(&self) -> bool {
        let mut reader = lock(&self.reader);
        if reader.is_some() {
            return !lock(&self.shared.state).closed;
        }
        let socket = Arc::clone(&self.socket);
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("shelfd-watch".into())
            .spawn(move || take_in(&socket, &shared))
        {
            Ok(t) => {
                *reader = Some(t);
                true
            }
            Err(e) => {
                tracing::warn!("cannot take change notices in: {e}");
                false
            }
        }
    }
}

fn take_in(socket: &OwnedFd, shared: &Shared) {
    let mut buf = vec![0u8; BATCH_MAX];
    loop {
        let n = match rustix::net::recv(socket.as_fd(), &mut buf[..], RecvFlags::empty()) {
            Ok((0, _)) => break,
            Ok((n, _)) => n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        };
        let msg = &buf[..n];
        let mut state = lock(&shared.state);
        match msg.first() {
            Some(b'A') if msg.len() == 6 => {
                let id = u32::from_le_bytes(msg[1..5].try_into().expect("4 bytes"));
                state.answers.insert(id, msg[5] == 1);
            }
            Some(b'C') => match batch_paths(&msg[1..]) {
                Some(paths) => paths.into_iter().for_each(|p| state.pending.push(p)),
                // Only the watcher writes to this socket: a bad message is a bug, and what it
                // said is lost.
                None => {
                    tracing::warn!("a malformed change message from the watcher");
                    state.pending.lose();
                }
            },
            Some(b'L') => state.pending.lose(),
            _ => tracing::warn!("a malformed message from the watcher"),
        }
        drop(state);
        shared.changed.notify_all();
    }
    // The watcher went (or this end was shut): what it would have told is lost.
    let mut state = lock(&shared.state);
    state.closed = true;
    state.pending.lose();
    drop(state);
    shared.changed.notify_all();
}

pub(crate) fn send(socket: &OwnedFd, msg: &[u8]) -> rustix::io::Result<()> {
    loop {
        match rustix::net::send(socket.as_fd(), msg, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_carries_every_path_in_order_over_as_many_messages_as_it_needs() {
        // Long paths, so the batch splits: none may be cut, lost or reordered at a seam.
        let paths: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("d{i}/{}", "x".repeat(i * 37 % 4000)).into_bytes())
            .collect();
        let mut batch = ChangeBatch::new();
        for p in &paths {
            batch.push(p);
        }
        let messages = batch.messages();
        assert!(
            messages.len() > 1,
            "100 paths of up to 4 KiB take more than one message"
        );
        let mut told = Vec::new();
        for m in &messages {
            assert!(m.len() <= BATCH_MAX && m[0] == b'C');
            told.extend(batch_paths(&m[1..]).expect("whole"));
        }
        assert_eq!(told, paths);
        assert!(
            ChangeBatch::new().messages().is_empty(),
            "no change, no message"
        );
    }

    #[test]
    fn a_change_message_cut_short_is_refused() {
        let mut batch = ChangeBatch::new();
        batch.push(b"a/b");
        let m = batch.messages().remove(0);
        assert_eq!(batch_paths(&m[1..]), Some(vec![b"a/b".to_vec()]));
        assert_eq!(batch_paths(&m[1..m.len() - 1]), None);
        assert_eq!(batch_paths(&[3]), None);
    }
}

//! `Faulty`: any transport, failing the requests a test chooses.
//!
//! A test scripts faults by request kind and number ("the 3rd `write` from now is lost with its
//! connection after the server did it"), runs the code under test, and reads the counters to
//! assert what happened (how many of each kind were sent, how many faults fired). The model is
//! mountpoint-s3's `failure_client.rs`.
//!
//! What is hard, and how it is handled:
//! 1. *Which request.* Requests are matched by [`Request::name`] (`"read"`, `"write"`,
//!    `"put-begin"`, ...) and counted per kind across `start` and `call`, so a rule names the
//!    Nth of a kind counted from when it was added, whatever else goes on between.
//! 2. *Where it fails.* A loss before sending ([`Fault::LostBefore`]) fails `start` as a dead
//!    connection does and the server never sees the request; a loss after the server did it
//!    ([`Fault::LostAfter`], "hang up mid-reply") sends it and fails the wait, so the change is
//!    made and its reply lost, the case resending must cope with. A hook
//!    ([`Faulty::on_hang_up`]) lets the inner transport hang up for real at that moment (for
//!    [`crate::Memory`], dropping the connection's put temporaries).
//! 3. *Not changing what passes.* A request no rule matches goes to the inner transport
//!    untouched, by the same method; `call` does not resend a faulted request (the inner
//!    transport's own resending sits below the faults).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use shelf_proto::{Code, Reply, Request};

use shelf_remote::{Limits, PendingReply, RemoteError, Transport};

/// What happens to a chosen request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The server refuses it: it is not sent, and its reply is `Reply::Error` with `code`.
    Refuse(Code),
    /// The connection is lost before it is sent: `start` (or `call`) fails with
    /// `Disconnected`, and the server never sees it.
    LostBefore,
    /// The connection is lost after the server carried it out: the wait fails with
    /// `Disconnected`, and the change stays made.
    LostAfter,
    /// Its reply comes this much later than it would.
    Delay(Duration),
}

/// A request on its way through [`Faulty`].
pub enum FaultyPending<P> {
    /// Untouched.
    Through(P),
    /// The reply is held back before it is handed over.
    Delayed(P, Duration),
    /// The server did it; the reply is lost.
    Lost(P),
    /// Answered by the fault, not the server.
    Refused(Code),
}

impl<P: PendingReply> PendingReply for FaultyPending<P> {
    fn wait(self) -> Result<Reply, RemoteError> {
        match self {
            FaultyPending::Through(p) => p.wait(),
            FaultyPending::Delayed(p, d) => {
                std::thread::sleep(d);
                p.wait()
            }
            FaultyPending::Lost(p) => {
                let _ = p.wait();
                Err(lost("after the server answered"))
            }
            FaultyPending::Refused(code) => Ok(refusal(code)),
        }
    }
}

struct Rule {
    kind: &'static str,
    /// The kind's count at which the rule fires.
    at: usize,
    fault: Fault,
}

#[derive(Default)]
struct Script {
    rules: Vec<Rule>,
    /// Requests seen per kind.
    seen: HashMap<&'static str, usize>,
    /// Faults that fired, in order: kind and fault.
    fired: Vec<(&'static str, Fault)>,
}

type HangUp<T> = Box<dyn Fn(&T) + Send + Sync>;

/// A transport that fails chosen requests; see the module docs.
pub struct Faulty<T: Transport> {
    inner: T,
    script: Mutex<Script>,
    hang_up: Option<HangUp<T>>,
}

impl<T: Transport> Faulty<T> {
    /// Passes everything to `inner` until a rule is added.
    pub fn new(inner: T) -> Self {
        Faulty {
            inner,
            script: Mutex::new(Script::default()),
            hang_up: None,
        }
    }

    /// Runs `hang_up` on the inner transport whenever a loss fires (before the failure shows),
    /// so the connection's state goes as it would on a real hang-up.
    pub fn on_hang_up(mut self, hang_up: impl Fn(&T) + Send + Sync + 'static) -> Self {
        self.hang_up = Some(Box::new(hang_up));
        self
    }

    /// The `nth` (from 1) request of `kind` ([`Request::name`]) started from now meets `fault`.
    pub fn fail(&self, kind: &'static str, nth: usize, fault: Fault) {
        let mut s = self.script.lock();
        let at = s.seen.get(kind).copied().unwrap_or(0) + nth.max(1);
        s.rules.push(Rule { kind, at, fault });
    }

    /// Requests of `kind` seen so far (faulted ones included).
    pub fn seen(&self, kind: &str) -> usize {
        self.script.lock().seen.get(kind).copied().unwrap_or(0)
    }

    /// The faults that fired so far, in order, with the kind of request each hit.
    pub fn fired(&self) -> Vec<(&'static str, Fault)> {
        self.script.lock().fired.clone()
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Counts `req` and takes the fault meant for it, if any.
    fn take(&self, req: &Request) -> Option<Fault> {
        let kind = req.name();
        let mut s = self.script.lock();
        let n = {
            let seen = s.seen.entry(kind).or_insert(0);
            *seen += 1;
            *seen
        };
        let i = s.rules.iter().position(|r| r.kind == kind && r.at == n)?;
        let fault = s.rules.remove(i).fault;
        s.fired.push((kind, fault.clone()));
        Some(fault)
    }

    fn hang_up(&self) {
        if let Some(h) = &self.hang_up {
            h(&self.inner);
        }
    }
}

impl<T: Transport> Transport for Faulty<T> {
    type Pending = FaultyPending<T::Pending>;

    fn start(&self, req: &Request) -> Result<Self::Pending, RemoteError> {
        Ok(match self.take(req) {
            None => FaultyPending::Through(self.inner.start(req)?),
            Some(Fault::Refuse(code)) => FaultyPending::Refused(code),
            Some(Fault::LostBefore) => {
                self.hang_up();
                return Err(lost("before the request was sent"));
            }
            Some(Fault::LostAfter) => {
                let p = self.inner.start(req)?;
                self.hang_up();
                FaultyPending::Lost(p)
            }
            Some(Fault::Delay(d)) => FaultyPending::Delayed(self.inner.start(req)?, d),
        })
    }

    fn call(&self, req: Request) -> Result<Reply, RemoteError> {
        match self.take(&req) {
            None => self.inner.call(req),
            Some(Fault::Refuse(code)) => Ok(refusal(code)),
            Some(Fault::LostBefore) => {
                self.hang_up();
                Err(lost("before the request was sent"))
            }
            Some(Fault::LostAfter) => {
                let _ = self.inner.call(req);
                self.hang_up();
                Err(lost("after the server answered"))
            }
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                self.inner.call(req)
            }
        }
    }

    /// Faults as for `call`, then the inner transport's pinned connection.
    fn call_pinned(&self, req: Request) -> Result<(Reply, u64), RemoteError> {
        match self.take(&req) {
            None => self.inner.call_pinned(req),
            Some(Fault::Refuse(code)) => Ok((refusal(code), 0)),
            Some(Fault::LostBefore) => {
                self.hang_up();
                Err(lost("before the request was sent"))
            }
            Some(Fault::LostAfter) => {
                let _ = self.inner.call_pinned(req);
                self.hang_up();
                Err(lost("after the server answered"))
            }
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                self.inner.call_pinned(req)
            }
        }
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn features(&self) -> u64 {
        self.inner.features()
    }
}

fn lost(when: &str) -> RemoteError {
    RemoteError::Disconnected(format!("connection lost {when} (injected)"))
}

fn refusal(code: Code) -> Reply {
    Reply::error(code, "injected fault")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Memory;
    use std::time::Instant;

    fn setup() -> (tempfile::TempDir, Faulty<Memory>) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("f"), b"").expect("file");
        let m = Memory::new(dir.path()).expect("memory transport");
        (dir, Faulty::new(m).on_hang_up(Memory::hang_up))
    }

    fn write(offset: u64) -> Request {
        Request::Write {
            path: b"f".to_vec(),
            offset,
            data: vec![b'x'].into(),
        }
    }

    #[test]
    fn the_nth_of_a_kind_is_hit_and_the_rest_pass() {
        let (dir, f) = setup();
        assert!(matches!(f.call(Request::Ping), Ok(Reply::Pong)));
        f.fail("write", 2, Fault::Refuse(Code::NoSpace));
        let mut codes = Vec::new();
        for i in 0..4 {
            let _ = f.call(Request::Ping);
            codes.push(match f.start(&write(i)).expect("started").wait() {
                Ok(Reply::Attr(_)) => None,
                Ok(Reply::Error { code, .. }) => Some(code),
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(codes, [None, Some(Code::NoSpace), None, None]);
        assert_eq!(f.seen("write"), 4);
        assert_eq!(f.seen("ping"), 5);
        assert_eq!(f.fired(), [("write", Fault::Refuse(Code::NoSpace))]);
        // The refused write never reached the server: byte 1 is a hole.
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"x\0xx");
    }

    #[test]
    fn a_loss_before_sending_leaves_the_server_untouched() {
        let (dir, f) = setup();
        f.fail("write", 1, Fault::LostBefore);
        let err = f.start(&write(0)).err().expect("lost");
        assert!(err.is_connection_lost());
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"");
        assert_eq!(f.inner().connections(), 2, "the hook hung the inner up");
    }

    #[test]
    fn a_loss_after_the_server_did_it_keeps_the_change_and_loses_the_reply() {
        let (dir, f) = setup();
        f.fail("write", 1, Fault::LostAfter);
        let err = f.start(&write(0)).expect("sent").wait().expect_err("lost");
        assert!(err.is_connection_lost());
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), b"x");
        f.fail("stat", 1, Fault::LostAfter);
        let err = f
            .call(Request::Stat {
                path: b"f".to_vec(),
            })
            .expect_err("lost");
        assert!(err.is_connection_lost());
        assert_eq!(f.fired().len(), 2);
    }

    #[test]
    fn a_delay_holds_the_reply_back() {
        let (_dir, f) = setup();
        f.fail("ping", 1, Fault::Delay(Duration::from_millis(50)));
        let t = Instant::now();
        assert!(matches!(
            f.start(&Request::Ping).expect("sent").wait(),
            Ok(Reply::Pong)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}

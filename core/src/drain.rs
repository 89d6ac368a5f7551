//! Draining write-behind before an operation that looks at a file's size or bytes (crate docs,
//! point 3). "Drain" is the core's word (as in `WriteBack::drain`): the remote client's `settle`
//! (wait for a reply, resending after a reconnect) is another thing.

use std::sync::Arc;

use shelf_remote::Transport;

use crate::error::FsResult;
use crate::ids::{Fh, Ino};
use crate::write::Drained;
use crate::Core;

/// Which report a drain makes of a write-behind failure through a handle (`write.rs`,
/// `Errors`, says what each moves and why).
#[derive(Clone, Copy)]
pub(crate) enum Report {
    /// `flush`: a failure the handle has not seen, left for every handle to see.
    Flush(Fh),
    /// `fsync`: a failure the handle has not seen, which it then has.
    Fsync(Fh),
}

impl<T: Transport> Core<T> {
    /// Sends a file's buffered writes and waits for them, so the server's size and bytes are
    /// the ones the program wrote. Cheap when nothing is buffered. A write-behind failure
    /// stays for each handle's own `write`, `flush` or `fsync` to report
    /// (`drain_writes_reporting`): a `stat` must neither fail for it nor swallow it before
    /// `close()` could say so.
    pub(crate) fn drain_writes(&self, ino: Ino) -> FsResult<()> {
        self.drain_with(ino, None)
    }

    pub(crate) fn drain_writes_reporting(&self, ino: Ino, report: Report) -> FsResult<()> {
        self.drain_with(ino, Some(report))
    }

    fn drain_with(&self, ino: Ino, report: Option<Report>) -> FsResult<()> {
        let Some(io) = self.open.lock().get(&ino).map(|s| Arc::clone(&s.io)) else {
            return Ok(());
        };
        // Lock order (`Core`): `open` was let go above; holding this file's `writes`, only
        // `open`, `kept` (in `path_of`) and leaves (`inodes`, `page_versions`) are taken, all
        // below it. No caller holds another file's `writes` or `open`.
        let mut wb = io.writes.lock();
        if !wb.is_clean() {
            let path = match self.path_of(ino) {
                Ok(p) => p,
                Err(e) if report.is_some() => return Err(e),
                Err(_) => return Ok(()),
            };
            let known = match wb.drain(&self.client, &path, self.write_limits) {
                Drained::Exact(attr) => Some(attr),
                Drained::Unknown => self.client.stat(&path).ok(),
                Drained::Nothing => None,
            };
            match known {
                Some(attr) => {
                    self.inodes.set_attr(ino, &attr);
                    self.pages_are(ino, attr.version());
                }
                // What the server holds now is unknown: the next getattr asks.
                None => self.inodes.invalidate_attr(ino),
            }
            self.entry_changed(ino);
        }
        match report {
            None => Ok(()),
            Some(Report::Flush(fh)) => wb.check(fh),
            Some(Report::Fsync(fh)) => wb.check_and_advance(fh),
        }
    }

    /// Drains every open file (before a listing, whose attributes replace the kernel's, and
    /// before a rename, which moves the paths writes in flight name).
    pub(crate) fn drain_all_writes(&self) {
        let inos: Vec<Ino> = self.open.lock().keys().copied().collect();
        for ino in inos {
            let _ = self.drain_writes(ino);
        }
    }
}

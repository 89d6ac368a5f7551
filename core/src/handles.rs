//! The tables of open files and directories: handle numbers, what each handle is of, and the
//! state an inode's open handles share (write-behind, read-ahead, a hidden name).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use shelf_proto::{Attr, Code, DirEntry, Version};
use shelf_remote::Transport;

use crate::error::{FsError, FsResult};
use crate::ids::{Fh, Ino};
use crate::readahead::ReadAhead;
use crate::write::WriteBack;
use crate::Core;

/// An opened file handle and whether the kernel may keep the pages it already holds.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: Fh,
    pub keep_cache: bool,
    /// Opened for writing: only then does its `close()` need a `flush` (write-behind to
    /// drain and its errors to report); the kernel skips it for the others.
    pub writable: bool,
}

/// Everything an inode with open handles needs, shared by its handles.
pub(crate) struct OpenState<P> {
    pub(crate) handles: usize,
    pub(crate) io: Arc<OpenIo<P>>,
    /// The hidden paths the file was given as it lost names while open, oldest first: each
    /// lost name left one (a file with two names that loses both has two), and all of them
    /// go at the last close.
    pub(crate) hidden: Vec<Vec<u8>>,
}

/// The parts of an open file that I/O works on, each behind its own lock so a read does not
/// wait for the table of open files.
pub(crate) struct OpenIo<P> {
    pub(crate) writes: Mutex<WriteBack<P>>,
    pub(crate) readahead: Mutex<ReadAhead>,
}

pub(crate) struct OpenFile {
    pub(crate) ino: Ino,
    pub(crate) writable: bool,
}

pub(crate) struct OpenDir {
    pub(crate) ino: Ino,
    pub(crate) attr: Attr,
    pub(crate) entries: Arc<Vec<DirEntry>>,
    /// When each page of the listing was asked for: an entry's attributes are as old as its
    /// page's request (`fresh.rs`).
    pub(crate) pages: shelf_remote::client::PageTimes,
}

impl OpenDir {
    /// When entry `i` of the listing was asked for.
    pub(crate) fn asked(&self, i: usize) -> std::time::Instant {
        page_time(&self.pages, i)
    }
}

/// When entry `i` was asked for: the time of the last page starting at or before it.
fn page_time(pages: &[(usize, std::time::Instant)], i: usize) -> std::time::Instant {
    let page = pages.partition_point(|&(first, _)| first <= i);
    pages[page.saturating_sub(1)].1
}

impl<T: Transport> Core<T> {
    /// `held` is the version of the pages the kernel held before the open: it keeps them only
    /// if that is the version the file has now.
    pub(crate) fn new_handle(
        &self,
        ino: Ino,
        attr: Attr,
        writable: bool,
        held: Option<Version>,
    ) -> Opened {
        let keep_cache = self.keep_pages(ino, held, attr.version());
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        // Lock order (`Core`): `open`, then `kept` inside it; both are released before the
        // file's `writes` and `files`, a leaf.
        let io = {
            let mut open = self.open.lock();
            let state = open.entry(ino).or_insert_with(|| OpenState {
                handles: 0,
                io: Arc::new(OpenIo {
                    writes: Mutex::default(),
                    readahead: Mutex::new(ReadAhead::new(self.cfg.readahead_window())),
                }),
                // Kept names now live as long as the handles do.
                hidden: self.kept.lock().remove(&ino).unwrap_or_default(),
            });
            state.handles += 1;
            Arc::clone(&state.io)
        };
        // The handle's cursor into the file's write-behind failures: it sees those from now
        // on (`write.rs`, `Errors`). The handle counted above keeps `io` the file's.
        io.writes.lock().opened(fh);
        self.files.lock().insert(fh, OpenFile { ino, writable });
        Opened {
            fh,
            keep_cache,
            writable,
        }
    }

    pub(crate) fn is_open(&self, ino: Ino) -> bool {
        self.open.lock().contains_key(&ino)
    }

    pub(crate) fn handle(&self, fh: Fh) -> FsResult<(Ino, bool)> {
        self.files
            .lock()
            .get(&fh)
            .map(|f| (f.ino, f.writable))
            .ok_or(FsError::Local(Code::BadHandle))
    }

    pub(crate) fn open_io(&self, ino: Ino) -> FsResult<Arc<OpenIo<T::Pending>>> {
        self.open
            .lock()
            .get(&ino)
            .map(|s| Arc::clone(&s.io))
            .ok_or(FsError::Local(Code::BadHandle))
    }
}

#[cfg(test)]
mod page_tests {
    use std::time::{Duration, Instant};

    #[test]
    fn an_entry_is_as_old_as_its_own_page() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let pages = [(0, at(0)), (3, at(10)), (5, at(20))];
        let got: Vec<Instant> = (0..7).map(|i| super::page_time(&pages, i)).collect();
        assert_eq!(got, [at(0), at(0), at(0), at(10), at(10), at(20), at(20)]);
        // An empty first page (an empty directory) still answers.
        assert_eq!(super::page_time(&[(0, at(5))], 0), at(5));
    }
}

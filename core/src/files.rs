//! Open files: `open`, `create`, `read`, `write`, `flush`, `fsync`, `release`.

use std::collections::HashMap;

use shelf_proto::{Attr, Bytes, Code, FileKind, SetAttrs};
use shelf_remote::Transport;

use crate::attrs::create_perm;
use crate::cache::ChunkKey;
use crate::drain::Report;
use crate::error::{FsError, FsResult};
use crate::fetch::EARLY_MAX_BYTES;
use crate::handles::{OpenState, Opened};
use crate::ids::{Fh, Ino};
use crate::inode::AttrStamp;
use crate::namespace::Entry;
use crate::versions::same_file;
use crate::Core;

/// Attributes younger than this serve an `open` without asking the server: those of the
/// lookup the kernel sends just before it.
const OPEN_FRESH: std::time::Duration = std::time::Duration::from_millis(20);

/// How many versions one `read` tries before it reports ESTALE (see `read`).
const READ_ATTEMPTS: usize = 4;

impl<T: Transport> Core<T> {
    /// `flags` are the `open(2)` flags the kernel passes on.
    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<Opened> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
        }
        self.drain_writes(ino)?;
        // Lock order (`Core`): `names` comes first; under it `attr` may drain (`writes`, then
        // `open` and `kept`) and `new_handle` takes `open` (`kept` inside it) and, once it
        // let go, `writes`, all below it.
        let _names = self.names.read();
        // A node that lost its name before this open got the lock (a rename over it raced
        // with the kernel's path walk) is stale here, where the kernel retries the walk, not at
        // the first read, where it would not.
        let path = self.path_of(ino)?;
        // The version of the pages the kernel holds, before this open learns anything new.
        let held = self.held_pages(ino);
        let small = EARLY_MAX_BYTES.min(self.cfg.chunk_size as u64);
        let early = |attr: &Attr| {
            // A small file opened to be read is about to be read whole: ask for its one chunk
            // now (see fetch.rs), unless the kernel keeps pages it will read from instead.
            let reads = !writable && flags & libc::O_TRUNC == 0;
            if reads && attr.kind == FileKind::File && (1..=small).contains(&attr.size) {
                let key = ChunkKey {
                    file: ino,
                    version: attr.version(),
                    index: 0,
                };
                if held != Some(key.version) {
                    self.fetcher.start_early(&path, key);
                }
            }
        };
        // Sent before the stat below, by the version known so far, so that the two travel
        // together: at a 20 ms round trip, an open and read of a small file then costs one
        // round trip, not two. If the stat finds another version, the read below is sent
        // again for it and this one goes unclaimed (dropped at the last close).
        if let Some(known) = self.inodes.last_attr(ino) {
            early(&known);
        }
        // Close-to-open consistency, as NFS keeps it: an open asks the server unless the
        // lookup just before it did. A file gone from the server (another client's unlink,
        // sqlite's journal) is ESTALE: the kernel looks the name up again, and an `O_CREAT`
        // then makes the file, instead of this open handing out a file that is not there.
        // One replaced meanwhile is opened as before, within the TTL (the kernel retries an
        // ESTALE once only, and a name replaced faster than that would fail the open); its
        // reads find the new version.
        let mut attr = match self.attr_within(ino, OPEN_FRESH) {
            Err(e) if e.code() == Code::NotFound => return Err(Code::Stale.into()),
            Err(e) if e.code() == Code::Stale => self.attr(ino)?,
            other => other?,
        };
        if attr.kind == FileKind::Dir {
            return Err(Code::IsDir.into());
        }
        if flags & libc::O_TRUNC != 0 && attr.size != 0 {
            attr = self.truncate_to_zero(&path)?;
            self.cache.invalidate_file(ino);
            self.inodes.set_attr(ino, &attr);
            self.entry_changed(ino);
        }
        let opened = self.new_handle(ino, attr, writable, held);
        if !opened.keep_cache {
            early(&attr);
        }
        Ok(opened)
    }

    /// `O_TRUNC` on an open or create of a file that has bytes.
    fn truncate_to_zero(&self, path: &[u8]) -> FsResult<Attr> {
        let attrs = SetAttrs {
            size: Some(0),
            ..Default::default()
        };
        Ok(self.client.set_attr(path, attrs)?)
    }

    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        self.check_writable()?;
        // Lock order (`Core`): as in `open`, everything taken under `names` lies below it.
        let _names = self.names.read();
        let path = self.new_child_path(parent, name)?;
        let perm = create_perm(mode, umask);
        // The kernel asks to create only a name it believes absent, but another client may
        // have made it meanwhile; `O_CREAT` without `O_EXCL` then just opens the file
        // (open(2)), and the directory, whose cached times `dir_changed` moves, is unchanged.
        // So ask for a new file first, and open the existing one only if there is one.
        let (made, created) = match self.client.create(&path, perm, true) {
            Err(e) if e.code() == Code::Exists && flags & libc::O_EXCL == 0 => {
                (self.client.create(&path, perm, false), false)
            }
            made => (made, true),
        };
        let mut attr = self.adding(parent, name, made)?;
        if flags & libc::O_TRUNC != 0 && attr.size != 0 {
            attr = self.truncate_to_zero(&path)?;
        }
        if created {
            self.dir_changed(parent, name, 0);
        }
        let entry = self.enter(parent, name, attr)?;
        if !created {
            // As `open` does: the new handle's cursor (`new_handle`) then starts after every
            // write sent before it, so it is told of no failure of theirs.
            self.drain_writes(entry.ino)?;
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let held = self.held_pages(entry.ino);
        Ok((entry, self.new_handle(entry.ino, attr, writable, held)))
    }

    /// The bytes of a read. Inside one chunk (the kernel's reads are 1 MiB-aligned, as
    /// chunks are by default) they are a view of the cached chunk, not a copy.
    pub fn read(&self, fh: Fh, offset: u64, size: u32) -> FsResult<Bytes> {
        let (ino, _) = self.handle(fh)?;
        let io = self.open_io(ino)?;
        self.drain_writes(ino)?;
        let cs = self.cfg.chunk_size as u64;
        let end = offset.saturating_add(size as u64);
        // Taken before anything is asked, so a reply that overlapped another change is not
        // cached over it (`saw_version_since`).
        let since = self.inodes.attr_stamp(ino);
        let mut attr = self.attr(ino)?;
        let (ahead, random) = {
            let mut ra = io.readahead.lock();
            let ahead = ra.on_read(offset, size as u64, self.cfg.chunk_size);
            (ahead, ra.window() == 0)
        };
        if random {
            if let Some(data) = self.read_direct(ino, &attr, since, offset, size)? {
                return Ok(data);
            }
        }
        // A version change met mid-read restarts the read under the new version; a file that
        // keeps changing faster than we can read it is reported rather than chased forever.
        for _ in 0..READ_ATTEMPTS {
            let path = self.path_of(ino)?;
            let version = attr.version();
            let stop = end.min(attr.size.max(offset));
            let keys: Vec<ChunkKey> = if stop > offset {
                (offset / cs..=(stop - 1) / cs)
                    .map(|index| ChunkKey {
                        file: ino,
                        version,
                        index,
                    })
                    .collect()
            } else {
                // Past the end as we know it: one chunk asks the server whether it grew.
                vec![ChunkKey {
                    file: ino,
                    version,
                    index: offset / cs,
                }]
            };
            let chunks = self.fetcher.chunks(&path, &keys)?;
            // A chunk with attributes came from the server now: read-ahead was not far
            // enough ahead to have it cached.
            if chunks.iter().any(|c| c.attr.is_some()) {
                io.readahead.lock().on_late();
            }
            if let Some(new) = chunks
                .iter()
                .filter_map(|c| c.attr)
                .find(|a| a.version() != version)
            {
                if !same_file(&new, &attr) {
                    return Err(Code::Stale.into());
                }
                attr = self.saw_version_since(ino, &new, since);
                continue;
            }
            let mut parts = Vec::with_capacity(chunks.len());
            for (key, chunk) in keys.iter().zip(&chunks) {
                let base = key.index * cs;
                let from = offset.max(base) - base;
                let to = (end.min(base + chunk.data.len() as u64)).saturating_sub(base);
                if from < to {
                    parts.push(chunk.data.slice(from as usize..to as usize));
                }
                if (chunk.data.len() as u64) < cs {
                    break; // end of file
                }
            }
            let out = match parts.len() {
                0 => Bytes::new(),
                1 => parts.swap_remove(0),
                _ => parts.concat().into(),
            };
            let last_chunk = attr.size.div_ceil(cs);
            for index in ahead.start..ahead.end.min(last_chunk) {
                self.fetcher.prefetch(
                    &path,
                    ChunkKey {
                        file: ino,
                        version,
                        index,
                    },
                );
            }
            return Ok(out);
        }
        Err(FsError::Local(Code::Stale))
    }

    /// A read that read-ahead calls random fetches just its own bytes, unless the cache holds
    /// them: fetching whole chunks for scattered 4 KiB reads would move 256 times the bytes
    /// asked for (`fio` random reads). `None`: served from chunks instead.
    fn read_direct(
        &self,
        ino: Ino,
        attr: &Attr,
        since: AttrStamp,
        offset: u64,
        size: u32,
    ) -> FsResult<Option<Bytes>> {
        let cs = self.cfg.chunk_size as u64;
        let last = offset.saturating_add(u64::from(size).max(1) - 1) / cs;
        let version = attr.version();
        let cached = (offset / cs..=last).all(|index| {
            self.cache.contains(&ChunkKey {
                file: ino,
                version,
                index,
            })
        });
        if cached {
            return Ok(None);
        }
        let path = self.path_of(ino)?;
        let (now, data) = self.client.read(&path, offset, size)?;
        if !same_file(&now, attr) {
            return Err(Code::Stale.into());
        }
        // The bytes are of one version, the one `now` names, whatever we expected.
        self.saw_version_since(ino, &now, since);
        Ok(Some(data))
    }

    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Err(Code::BadHandle.into());
        }
        self.check_writable()?;
        let io = self.open_io(ino)?;
        let path = self.path_of(ino)?;
        io.writes
            .lock()
            .write(&self.client, fh, &path, offset, data, self.write_limits)?;
        self.cache.invalidate_file(ino);
        Ok(data.len() as u32)
    }

    /// Called on every `close()` of a descriptor of the handle (a `dup` or a forked child's
    /// copy shares it): the file's writes reach the server and a failure the handle has not
    /// seen is reported here, yet stays for the handle's `fsync` and every other handle
    /// (`write.rs`, `Errors`: a child's close must not hide it from the parent's `fsync`). A
    /// read-only handle has nothing to report (the kernel does not even ask,
    /// `FOPEN_NOFLUSH`, unless it caches writes itself).
    pub fn flush(&self, fh: Fh) -> FsResult<()> {
        let (ino, writable) = self.handle(fh)?;
        if !writable {
            return Ok(());
        }
        self.drain_writes_reporting(ino, Report::Flush(fh))
    }

    /// Reports a write-behind failure this handle has not seen, once per handle, as
    /// `fsync(2)` does for each open file description.
    pub fn fsync(&self, fh: Fh, data_only: bool) -> FsResult<()> {
        let (ino, _) = self.handle(fh)?;
        self.drain_writes_reporting(ino, Report::Fsync(fh))?;
        Ok(self.client.fsync(&self.path_of(ino)?, data_only)?)
    }

    /// No ioctl is carried to the server: the protocol has none, and a file's own flags
    /// (`FS_IOC_GETFLAGS`, what `lsattr` asks) are the server file system's business. ENOTTY
    /// is what a local file system answers an ioctl it does not know, and what `isatty()`,
    /// which every Python `open()` and many a C library stream asks, expects of a file.
    pub fn ioctl(&self, fh: Fh, _cmd: u32) -> FsResult<Vec<u8>> {
        self.handle(fh)?;
        Err(Code::NotTty.into())
    }

    pub fn release(&self, fh: Fh) -> FsResult<()> {
        let Some(file) = self.files.lock().remove(&fh) else {
            return Err(Code::BadHandle.into());
        };
        let drained = self.drain_writes(file.ino);
        // After the writes: whoever takes a lock this handle held next sees them.
        self.release_locks(fh);
        // A failure left unreported here is lost with the handle, as the kernel ignores what
        // a release answers: the close's flush, just before, was the handle's last word.
        if let Ok(io) = self.open_io(file.ino) {
            io.writes.lock().closed(fh);
        }
        let last_of_hidden =
            |open: &mut HashMap<Ino, OpenState<T::Pending>>| match open.get_mut(&file.ino) {
                Some(state) if state.handles > 1 => {
                    state.handles -= 1;
                    Ok(None)
                }
                Some(state) if !state.hidden.is_empty() => Err(()),
                Some(_) => {
                    open.remove(&file.ino);
                    Ok(None)
                }
                None => Ok(None),
            };
        // Bound first: a guard in the `match` head would be held through the arms.
        let first = last_of_hidden(&mut self.open.lock());
        let hidden = match first {
            Ok(none) => none,
            // The last handle of a file that lost its name: an `open` of the same inode (the
            // kernel resolved the name before it went) may be between finding the hidden
            // name and counting its handle. The names lock orders the two: either that open
            // counts first and the file stays, or it finds no name and the kernel retries.
            Err(()) => {
                // Lock order (`Core`): `names`, then `open`; the `open` guard above is gone
                // (it was a temporary of its own statement).
                let _names = self.names.write();
                let mut open = self.open.lock();
                match last_of_hidden(&mut open) {
                    Ok(none) => none,
                    Err(()) => open.remove(&file.ino).map(|s| s.hidden),
                }
            }
        };
        if let Some(hidden) = hidden {
            self.remove_hidden(file.ino, &hidden);
        }
        if !self.is_open(file.ino) {
            self.fetcher.forget_early(file.ino);
        }
        drained
    }
}

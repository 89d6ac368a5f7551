//! The usual setup in one value: a fresh library, a server for it and one mount of it
//! ([`Fixture`]), dropped in the order that is safe: mount, then server, then library.

use std::ffi::OsStr;
use std::path::Path;

use crate::environment::fuse_available;
use crate::fsutil::temp_dir;
use crate::mount::Mount;
use crate::server::Server;

/// A fresh temp library, a server for it, and one mount of it. Fields drop in order: the
/// mount first, then the server, then the library.
pub struct Fixture {
    pub mount: Mount,
    pub server: Server,
    pub lib: tempfile::TempDir,
}

impl Fixture {
    /// A fixture with default options, or `None` when FUSE tests are skipped
    /// (see [`fuse_available`]).
    pub fn new() -> Option<Fixture> {
        Fixture::with_args::<&str>(&[], &[])
    }

    /// A fixture whose server and mount get extra arguments.
    pub fn with_args<S: AsRef<OsStr>>(server_args: &[S], mount_args: &[S]) -> Option<Fixture> {
        if !fuse_available() {
            return None;
        }
        let lib = library();
        let server = Server::start(lib.path(), server_args);
        let mount = Mount::new(server.addr(), mount_args);
        Some(Fixture { mount, server, lib })
    }

    /// The library directory as the server sees it.
    pub fn lib(&self) -> &Path {
        self.lib.path()
    }

    /// The mount point.
    pub fn mnt(&self) -> &Path {
        self.mount.path()
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- shelfd log ---\n{}\n--- mount log ---\n{}",
            self.server.log(),
            self.mount.log()
        )
    }
}

/// A fresh, empty temp directory to serve (canonical path).
pub fn library() -> tempfile::TempDir {
    temp_dir("shelf-lib-")
}

//! shelf-client: mount a shelf library with FUSE, or use it from the command line.
//!
//! Layout, from the kernel down (docs: STYLE.md section 4):
//! - [`mount`]: `shelf mount` and `shelf umount`: options, detaching, signals.
//! - [`fs`]: the thin `fuser::Filesystem` glue.
//! - [`core`], [`inode`], [`listing`]: the filesystem core, generic over the remote, its
//!   inode table and its whole-directory listings.
//! - [`cache`], [`readahead`]: the chunk cache and read-ahead policy.
//! - [`remote`]: connections to the server (pipelined requests, a pool with reconnect, typed
//!   calls) and an in-process loopback server for tests. The mount and the CLI both use it.
//! - [`status`]: each mount's status socket and `shelf status`.
//! - [`cli`]: the `shelf` command: `ls`, `get`, `put`, `rm`, `mkdir`, `mv`, `shell`, and the
//!   entry points of `mount`/`umount`.

pub mod cache;
pub mod cli;
pub mod core;
pub mod fs;
pub mod inode;
pub mod listing;
pub mod mount;
pub mod readahead;
pub mod remote;
pub mod status;

//! shelf-client: the `shelf` binary. Mount a shelf library with FUSE, or use it from the
//! command line.
//!
//! Layout, from the kernel down (docs: STYLE.md section 4):
//! - [`mount`]: `shelf mount` and `shelf umount`: options, detaching, mount(2), signals, the
//!   mount(8) helper.
//! - [`fs`]: the thin `fuser::Filesystem` glue: converts each kernel call, calls the core,
//!   replies. What is hard lives below it, where tests reach it without a mount.
//! - [`status`]: each mount's status socket and `shelf status`.
//! - [`cli`]: the `shelf` command: `ls`, `get`, `put`, `rm`, `mkdir`, `mv`, `shell`, and the
//!   entry points of `mount`/`umount`.
//! - [`heap`]: the allocator setting the mount's large buffers need.
//!
//! Below it: `shelf_core` (the filesystem core, caches, read-ahead, write-behind) and
//! `shelf_remote` (connections to the server). This crate holds no server code: the tests'
//! in-process server comes from the dev-only `shelf_testkit`.

pub mod cli;
pub mod fs;
pub mod heap;
pub mod locks;
pub mod mount;
pub mod status;

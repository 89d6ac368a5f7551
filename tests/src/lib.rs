//! The end-to-end harness: a real `shelfd`, the real `shelf` binary, real FUSE mounts.
//!
//! This crate owns everything the suites in `tests/tests/` share: finding the binaries,
//! starting servers and mounts, running commands, test data, and a proxy that misbehaves on
//! command. The suites hold the tests; nothing here is shipped.
//!
//! The rules every test keeps, and the helpers that keep them:
//! 1. **Everything a test starts belongs to a guard whose `Drop` cleans up**, also while a
//!    failed assertion unwinds: [`Server`] stops (SIGTERM, then SIGKILL of its whole process
//!    group) and reaps its process, [`Mount`] detaches the mount and reaps `shelf mount`,
//!    [`MountDir`] removes a mount point only once nothing is mounted on it, [`Cmd`] kills a
//!    command that outlives its timeout, [`OnTerminal`] kills and reaps its command, and
//!    [`proxy::Proxy`] joins its threads. No process, mount or zombie outlives its test.
//! 2. **No server ever sees a mount of itself** (DESIGN.md, "Server rules"): `shelfd` runs in a
//!    private mount namespace made before its mount exists, without the other tests' mounts
//!    (`server`).
//! 3. **Servers listen on port 0** and the test reads the address from shelfd's first line, so
//!    suites run in parallel without choosing ports; the second line is the key's fingerprint,
//!    which every `shelf` the tests run trusts (and only that key: [`tls`]). Each server keeps
//!    its key in a state directory of its own, so none touches `/var/lib/shelfd`.
//! 4. **A broken mount fails a test, it does not hang CI**: every [`Mount`] has a watchdog that
//!    aborts its FUSE connection past its deadline (`watchdog`), and every command has a
//!    timeout.
//! 5. **A failure says what happened**: a failed command prints the command, its status,
//!    stdout and stderr ([`Output`]); a failed start prints the server's or the mount's log.
//! 6. **A machine that cannot run a test fails it**, naming what is missing, unless
//!    `SHELF_SKIP_FUSE=1` asks to skip the FUSE tests ([`fuse_available`]).
//!
//! Modules, one idea each; the suites use the re-exports (`use shelf_tests::*`):
//! - `environment`: the binaries (beside the test executable or in `$SHELF_BIN_DIR`; build them
//!   first with `cargo build --bins`), tools on `PATH`, whether FUSE is usable;
//! - `process`: signals, waiting with a timeout, polling, the process table;
//! - `cmd`: [`Cmd`] and its [`Output`];
//! - `server`: [`Server`], shelfd in its own mount namespace;
//! - `mountinfo`: reading `/proc/self/mountinfo`;
//! - `watchdog`: aborting a FUSE connection, and the watchdog that does it in time;
//! - `mount`: [`Mount`], [`MountDir`], unmounting;
//! - `fixture`: [`Fixture`], a library with its server and one mount;
//! - `data`: ramps and seeded random bytes;
//! - `fsutil`: a test tree, leftovers, whole-file reads and writes, byte comparisons;
//! - [`proxy`]: a TCP proxy that stalls, cuts or half-closes on command;
//! - `pty`: [`OnTerminal`], a command on a pseudo-terminal of its own (prompts, notices);
//! - [`tls`]: servers speak TLS by default; each one's fingerprint is pinned for every command
//!   the tests run, through a known-servers file in a config directory of their own.

pub mod chaos;
mod cmd;
mod data;
mod environment;
mod fixture;
mod fsutil;
pub mod loadgen;
mod mount;
mod mountinfo;
mod process;
pub mod proxy;
mod pty;
mod server;
pub mod tls;
mod watchdog;

pub use cmd::{run, sh, shelf, tool, Cmd, Output, CMD_TIMEOUT};
pub use data::{ramp, random_bytes, Rng};
pub use environment::{bin_dir, fuse_available, have_tool, require_tool, shelf_bin, shelfd_bin};
pub use fixture::{library, Fixture};
pub use fsutil::{assert_bytes_eq, make_tree, read, read_all, shelf_leftovers, write, Tmpfs};
pub use mount::{unmount_detach, Mount, MountDir};
pub use mountinfo::{mount_at, mountinfo, MountInfo};
pub use process::{children_of, poll, processes, signal, wait_timeout, ProcStat, START_TIMEOUT};
pub use pty::OnTerminal;
pub use server::Server;
pub use tls::{config_home, fingerprint_of, known_servers_file, shelf_command, RawConn};
pub use watchdog::{abort_connection, ensure_fusectl, watchdog_secs};

//! fallocate, holes and server-side copies: what the server does, and that no cache (write-
//! behind, chunks, attributes) serves the bytes or size from before.

use std::os::unix::fs::{FileExt, MetadataExt};

use shelf_proto::features;
use shelf_remote::RemoteError;

use super::*;

const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

/// A long TTL: every answer must come from what the core itself recorded, not from asking.
fn cached_fixture() -> Fixture {
    fixture_with(CoreConfig {
        chunk_size: CHUNK,
        cache_bytes: 64 * CHUNK as u64,
        attr_ttl: Duration::from_secs(3600),
        ..CoreConfig::default()
    })
}

#[test]
fn a_hole_punched_under_buffered_writes_stays_a_hole() {
    let f = cached_fixture();
    let (_, o) = f.create("f");
    let data = ramp(4 * CHUNK as usize, 0);
    f.core.write(o.fh, 0, &data).expect("write");
    f.core.flush(o.fh).expect("flush");
    // Fewer bytes than write-behind sends at once: they wait in its buffer.
    f.core
        .write(o.fh, u64::from(CHUNK) + 10, b"buffered")
        .expect("buffered write");
    let attr = f
        .core
        .fallocate(o.fh, u64::from(CHUNK), 2 * u64::from(CHUNK), PUNCH)
        .expect("punch");
    assert_eq!(attr.size, data.len() as u64, "KEEP_SIZE keeps the size");
    f.core.flush(o.fh).expect("flush");
    let mut want = data.clone();
    want[CHUNK as usize..3 * CHUNK as usize].fill(0);
    let on_server = fs::read(f.dir.path().join("f")).expect("server copy");
    assert!(
        on_server == want,
        "the buffered bytes went first, the hole after"
    );
    assert!(
        f.read_all(o.fh, data.len() as u32) == want,
        "read through the core"
    );
    f.core.release(o.fh).expect("release");
}

#[test]
fn punch_and_zero_range_drop_cached_chunks() {
    let f = cached_fixture();
    fs::write(f.dir.path().join("f"), ramp(4 * CHUNK as usize, 3)).expect("seed");
    let e = f.core.lookup(ROOT_INO, b"f").expect("lookup");
    let o = f.core.open(e.ino, libc::O_RDWR).expect("open");
    assert_eq!(
        f.read_all(o.fh, 4 * CHUNK),
        ramp(4 * CHUNK as usize, 3),
        "cached"
    );
    f.core
        .fallocate(o.fh, 0, u64::from(CHUNK), PUNCH)
        .expect("punch");
    let got = f.read_all(o.fh, 4 * CHUNK);
    assert!(
        got[..CHUNK as usize].iter().all(|&b| b == 0),
        "no stale chunk"
    );
    assert_eq!(
        &got[CHUNK as usize..],
        &ramp(4 * CHUNK as usize, 3)[CHUNK as usize..]
    );
    let attr = f
        .core
        .fallocate(
            o.fh,
            3 * u64::from(CHUNK),
            2 * u64::from(CHUNK),
            libc::FALLOC_FL_ZERO_RANGE,
        )
        .expect("zero range");
    assert_eq!(
        attr.size,
        5 * u64::from(CHUNK),
        "ZERO_RANGE without KEEP_SIZE extends"
    );
    assert_eq!(f.core.getattr(e.ino).expect("getattr").size, attr.size);
    let got = f.read_all(o.fh, 5 * CHUNK);
    assert_eq!(got.len(), 5 * CHUNK as usize);
    assert!(got[3 * CHUNK as usize..].iter().all(|&b| b == 0), "zeroed");
    f.core.release(o.fh).expect("release");
}

#[test]
fn allocating_extends_the_cached_size_and_keep_size_does_not() {
    let f = cached_fixture();
    let (e, o) = f.create("f");
    f.core.write(o.fh, 0, b"abc").expect("write");
    let a = f.core.fallocate(o.fh, 0, 1 << 20, 0).expect("allocate");
    assert_eq!(a.size, 1 << 20);
    assert_eq!(f.core.getattr(e.ino).expect("getattr").size, 1 << 20);
    let a = f
        .core
        .fallocate(o.fh, 0, 4 << 20, libc::FALLOC_FL_KEEP_SIZE)
        .expect("keep size");
    assert_eq!(a.size, 1 << 20);
    assert!(a.blocks * 512 >= 4 << 20, "allocated: {} blocks", a.blocks);
    assert_eq!(&f.core.read(o.fh, 0, 4).expect("read")[..], b"abc\0");
    f.core.release(o.fh).expect("release");
}

/// The attributes fallocate hands back count links as getattr does: an unlinked open file,
/// kept on the server under a hidden name, shows none.
#[test]
fn fallocate_of_an_unlinked_open_file_shows_no_links() {
    let f = fixture();
    let (e, o) = f.create("tmp");
    f.core.unlink(ROOT_INO, b"tmp").expect("unlink");
    let a = f.core.fallocate(o.fh, 0, 4096, 0).expect("allocate");
    assert_eq!((a.size, a.nlink), (4096, 0));
    assert_eq!(f.core.getattr(e.ino).expect("fstat").nlink, 0);
    f.core.release(o.fh).expect("release");
    f.core.forget(e.ino, 1);
}

#[test]
fn fallocate_refusals() {
    let f = fixture();
    let (e, o) = f.create("f");
    assert_eq!(
        errno_of(f.core.fallocate(o.fh, 0, 1, libc::FALLOC_FL_COLLAPSE_RANGE)),
        Code::NotSupported
    );
    assert_eq!(
        errno_of(f.core.fallocate(o.fh, 0, 1, libc::FALLOC_FL_PUNCH_HOLE)),
        Code::NotSupported,
        "Linux wants KEEP_SIZE with a punch"
    );
    assert_eq!(errno_of(f.core.fallocate(o.fh, 0, 0, 0)), Code::Invalid);
    let ro = f.core.open(e.ino, libc::O_RDONLY).expect("open read-only");
    assert_eq!(errno_of(f.core.fallocate(ro.fh, 0, 1, 0)), Code::BadHandle);
    f.core.release(ro.fh).expect("release");
    f.core.release(o.fh).expect("release");
}

#[test]
fn seek_sees_data_just_written_and_holes() {
    let f = fixture();
    let (_, o) = f.create("sparse");
    f.core
        .write(o.fh, 1 << 20, &ramp(100, 0))
        .expect("buffered write past a hole");
    assert_eq!(
        f.core.lseek(o.fh, 0, libc::SEEK_DATA).expect("data"),
        1 << 20
    );
    assert_eq!(f.core.lseek(o.fh, 0, libc::SEEK_HOLE).expect("hole"), 0);
    assert_eq!(
        f.core.lseek(o.fh, 1 << 20, libc::SEEK_HOLE).expect("end"),
        (1 << 20) + 100,
        "the end of the file is a hole"
    );
    for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
        assert_eq!(
            errno_of(f.core.lseek(o.fh, (1 << 20) + 100, whence)),
            Code::NoDeviceOrAddress
        );
        assert_eq!(
            errno_of(f.core.lseek(o.fh, -1, whence)),
            Code::NoDeviceOrAddress
        );
    }
    assert_eq!(
        errno_of(f.core.lseek(o.fh, 0, libc::SEEK_END)),
        Code::Invalid
    );
    f.core.release(o.fh).expect("release");
}

#[test]
fn copy_is_done_by_the_server_and_the_destination_is_fresh() {
    let f = cached_fixture();
    let data = ramp(1 << 20, 5);
    let (_, src) = f.create("src");
    f.core.write(src.fh, 0, &data).expect("buffered source");
    fs::write(f.dir.path().join("dst"), ramp(2 * CHUNK as usize, 9)).expect("old destination");
    let e = f.core.lookup(ROOT_INO, b"dst").expect("lookup");
    let dst = f.core.open(e.ino, libc::O_RDWR).expect("open");
    assert_eq!(
        f.read_all(dst.fh, 2 * CHUNK),
        ramp(2 * CHUNK as usize, 9),
        "cached"
    );
    f.core
        .write(dst.fh, 0, b"buffered")
        .expect("buffered destination");

    // Drain both first, so what the copy moves is counted apart from them.
    f.core.flush(src.fh).expect("flush");
    f.core.flush(dst.fh).expect("flush");
    let before = f.core.transport().pool().state().requests;
    let n = f
        .core
        .copy_file_range(src.fh, 0, dst.fh, 0, u64::MAX, 0)
        .expect("copy");
    assert_eq!(n as usize, data.len());
    let sent = f.core.transport().pool().state().requests - before;
    assert_eq!(sent, 1, "one request, no data through the client");
    assert_eq!(
        f.core.getattr(e.ino).expect("getattr").size,
        data.len() as u64
    );
    assert!(
        f.read_all(dst.fh, data.len() as u32 + 10) == data,
        "no stale chunk"
    );
    assert!(fs::read(f.dir.path().join("dst")).expect("server") == data);

    let past = f.core.copy_file_range(src.fh, 2 << 20, dst.fh, 0, 10, 0);
    assert_eq!(past.expect("past the end"), 0);
    assert_eq!(
        errno_of(f.core.copy_file_range(src.fh, 0, dst.fh, 0, 10, 1)),
        Code::Invalid
    );
    assert_eq!(
        errno_of(f.core.copy_file_range(src.fh, 0, src.fh, 10, 100, 0)),
        Code::Invalid,
        "overlapping ranges of one file"
    );
    f.core.release(src.fh).expect("release");
    f.core.release(dst.fh).expect("release");
}

#[test]
fn copy_needs_a_writable_destination() {
    let f = fixture();
    let (e, o) = f.create("a");
    let ro = f.core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(
        errno_of(f.core.copy_file_range(o.fh, 0, ro.fh, 0, 1, 0)),
        Code::BadHandle
    );
    f.core.release(ro.fh).expect("release");
    f.core.release(o.fh).expect("release");
}

#[test]
fn a_read_only_mount_refuses_fallocate_and_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("f"), b"data").expect("seed");
    let core = Core::new(
        Loopback::new(dir.path()).expect("loopback"),
        CoreConfig {
            read_only: true,
            ..CoreConfig::default()
        },
    );
    let e = core.lookup(ROOT_INO, b"f").expect("lookup");
    assert_eq!(errno_of(core.open(e.ino, libc::O_RDWR)), Code::ReadOnly);
    let o = core.open(e.ino, libc::O_RDONLY).expect("open");
    assert_eq!(errno_of(core.fallocate(o.fh, 0, 1, 0)), Code::BadHandle);
    assert_eq!(
        errno_of(core.copy_file_range(o.fh, 0, o.fh, 8, 4, 0)),
        Code::BadHandle
    );
    assert_eq!(
        core.lseek(o.fh, 0, libc::SEEK_HOLE)
            .expect("seek only looks"),
        4
    );
    core.release(o.fh).expect("release");
    assert_eq!(fs::read(dir.path().join("f")).expect("read"), b"data");
}

/// A server from before these requests: the same loopback, announcing only the old bits.
struct OldServer(Loopback);

impl shelf_remote::Transport for OldServer {
    type Pending = shelf_remote::Pending;
    fn start(&self, req: &shelf_proto::Request) -> Result<Self::Pending, RemoteError> {
        self.0.start(req)
    }
    fn call(&self, req: shelf_proto::Request) -> Result<shelf_proto::Reply, RemoteError> {
        self.0.call(req)
    }
    fn limits(&self) -> shelf_remote::Limits {
        self.0.limits()
    }
    fn features(&self) -> u64 {
        features::ATOMIC_PUT | features::LINKS
    }
}

#[test]
fn an_older_server_gets_nothing_it_does_not_know() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = fs::File::create(dir.path().join("f")).expect("create");
    file.write_all_at(b"x", 1 << 20).expect("sparse");
    let core = Core::new(
        OldServer(Loopback::new(dir.path()).expect("loopback")),
        CoreConfig::default(),
    );
    let e = core.lookup(ROOT_INO, b"f").expect("lookup");
    let o = core.open(e.ino, libc::O_RDWR).expect("open");
    assert_eq!(errno_of(core.fallocate(o.fh, 0, 1, 0)), Code::NotSupported);
    assert_eq!(
        errno_of(core.copy_file_range(o.fh, 0, o.fh, 4 << 20, 1, 0)),
        Code::NotSupported,
        "the kernel copies through read and write on EOPNOTSUPP"
    );
    // As the kernel's own lseek would answer: all data up to the end.
    assert_eq!(core.lseek(o.fh, 5, libc::SEEK_DATA).expect("data"), 5);
    assert_eq!(
        core.lseek(o.fh, 5, libc::SEEK_HOLE).expect("hole"),
        (1 << 20) + 1
    );
    assert_eq!(
        fs::metadata(dir.path().join("f")).expect("stat").size(),
        (1 << 20) + 1
    );
    core.release(o.fh).expect("release");
}

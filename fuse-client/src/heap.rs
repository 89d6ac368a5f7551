//! How the mount's allocator treats large buffers.

/// Serves the large I/O buffers (frames, chunks: up to a few MiB) from the heap, in at most
/// two arenas, trimmed past 32 MiB free. glibc's defaults give such a buffer back when it is
/// freed (mmap, or trimming the heap top) and fault in fresh zeroed pages for the next; past
/// its growing threshold, one arena per thread keeps what was freed. The server's connection
/// process makes the same setting for the same reason (`shelf_server`'s `sys`).
pub fn keep_large_buffers_in_heap() {
    // SAFETY: mallopt only sets allocator parameters and takes glibc's own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

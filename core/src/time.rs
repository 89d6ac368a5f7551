//! Conversions between `SystemTime` (the kernel's side, through fuser) and the wire's
//! `Timestamp` (seconds and nanoseconds since the epoch, negative before it).

use std::time::Duration;

use shelf_proto::Timestamp;

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// A `Timestamp` for `SystemTime`, for callers converting kernel times.
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Timestamp::new(d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Timestamp::new(-(d.as_secs() as i64), 0)
            } else {
                Timestamp::new(-(d.as_secs() as i64) - 1, NANOS_PER_SEC - d.subsec_nanos())
            }
        }
    }
}

/// The `SystemTime` of a `Timestamp`.
pub fn system_time(t: Timestamp) -> std::time::SystemTime {
    let nanos = Duration::from_nanos(t.nanos as u64);
    if t.secs >= 0 {
        std::time::UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        std::time::UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

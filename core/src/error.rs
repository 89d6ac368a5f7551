//! The filesystem core's one error type and its errno.

use shelf_proto::Code;

use shelf_remote::RemoteError;

/// Why a filesystem operation failed. `errno` is the only place the kernel's errno comes
/// from; both arms defer to `proto::Code`, the one mapping.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{0}")]
    Local(Code),
}

impl FsError {
    pub fn code(&self) -> Code {
        match self {
            FsError::Remote(e) => e.code(),
            FsError::Local(c) => *c,
        }
    }

    pub fn errno(&self) -> i32 {
        self.code().errno()
    }

    /// Whether the server may have done what was asked although the call failed
    /// ([`RemoteError::outcome_unknown`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, FsError::Remote(e) if e.outcome_unknown())
    }
}

impl From<Code> for FsError {
    fn from(c: Code) -> Self {
        FsError::Local(c)
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `Remote` is transparent: the chain below an `FsError` is the remote error's own, said
    /// once (`shelf_remote`'s tests walk those).
    #[test]
    fn no_message_repeats_its_source() {
        let unreachable = RemoteError::Unreachable {
            addr: "127.0.0.1:1".into(),
            cause: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        for e in [FsError::Remote(unreachable), FsError::Local(Code::Stale)] {
            match &e {
                FsError::Remote(_) | FsError::Local(_) => {}
            }
            let mut cur: &dyn std::error::Error = &e;
            while let Some(below) = cur.source() {
                let (text, cause) = (cur.to_string(), below.to_string());
                assert!(!text.contains(&cause), "{text:?} repeats {cause:?}");
                cur = below;
            }
        }
    }
}

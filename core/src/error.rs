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
}

impl From<Code> for FsError {
    fn from(c: Code) -> Self {
        FsError::Local(c)
    }
}

pub type FsResult<T> = Result<T, FsError>;

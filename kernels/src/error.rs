//! The one error type of the crate. Every public entry point validates its arguments and returns
//! `Err(KernelError)` instead of panicking.

use std::fmt;

/// Why a kernel could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// An ISA was requested that this CPU (or the `OCTET_ISA` cap) does not allow.
    UnsupportedIsa {
        /// What was asked for.
        requested: &'static str,
        /// The best ISA that is allowed here.
        available: &'static str,
    },
    /// `OCTET_ISA` holds a value that is not one of `scalar|avx2|avx512|avx512vnni`.
    BadIsaEnv(String),
    /// A shape, length, stride or parameter is invalid; the message names it, with expected vs found.
    BadArgument(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::UnsupportedIsa { requested, available } => write!(
                f,
                "ISA `{requested}` is not available on this CPU/configuration (best allowed: `{available}`)"
            ),
            KernelError::BadIsaEnv(v) => write!(
                f,
                "OCTET_ISA={v:?} is not one of scalar|avx2|avx512|avx512vnni"
            ),
            KernelError::BadArgument(m) => write!(f, "bad argument: {m}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Shorthand for a `BadArgument` error.
pub(crate) fn bad(msg: impl Into<String>) -> KernelError {
    KernelError::BadArgument(msg.into())
}

/// Checks that a buffer of `len` elements holds a `rows` x `cols` matrix with leading dimension `ld`.
pub(crate) fn check_matrix(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if ld < cols {
        return Err(bad(format!(
            "{what}: leading dimension {ld} is smaller than the row length {cols}"
        )));
    }
    let need = (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(cols))
        .ok_or_else(|| bad(format!("{what}: size overflows usize")))?;
    if len < need {
        return Err(bad(format!(
            "{what}: buffer too small for {rows}x{cols} (ld {ld}): need {need} elements, found {len}"
        )));
    }
    Ok(())
}

//! Compiled models: the `.octet` format ([`format`]), in-process compilation ([`compile`]),
//! the embedding API ([`Session`]) and standalone executables ([`exe`]).

pub mod compile;
pub mod exe;
pub mod format;
pub mod session;

pub use format::{ArtifactError, CompiledModel, IoSig};
pub use session::{Session, SessionError};

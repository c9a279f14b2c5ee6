//! Errors are values: every fallible call in the engine returns [`Result`].
//!
//! A message always names the op that failed and the shapes or device involved, so that
//! a user who passes the wrong tensor learns what to change without a backtrace.

use thiserror::Error;

/// Everything that can go wrong in the engine.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// Shapes that do not fit the op: `op` names it, `msg` says what was expected.
    #[error("{op}: {msg}")]
    Shape {
        /// The op that rejected its inputs, e.g. `"matmul"`.
        op: &'static str,
        /// What was wrong, with the shapes involved.
        msg: String,
    },
    /// Tensors on different devices were combined.
    #[error(
        "{op}: tensors live on different devices ({lhs} and {rhs}); move one with `to_device`"
    )]
    DeviceMismatch {
        /// The op that received them.
        op: &'static str,
        /// The first tensor's device.
        lhs: String,
        /// The second tensor's device.
        rhs: String,
    },
    /// An argument outside its valid range that is not a shape (an axis, an index, a rate).
    #[error("{op}: {msg}")]
    Invalid {
        /// The op that rejected the argument.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// Autodiff misuse, e.g. `backward()` on a non-scalar.
    #[error("autodiff: {0}")]
    Autodiff(String),
    /// A failure inside a device (Vulkan call, out of device memory, shader compilation).
    #[error("device: {0}")]
    Device(String),
    /// An op made a NaN or an infinity from finite inputs while anomaly detection was
    /// on (see [`crate::anomaly`]): which op, in which pass and layer, on which shapes.
    #[error("{0}")]
    NonFinite(Box<crate::anomaly::NonFinite>),
    /// A file that could not be read or written, or whose contents are not what was
    /// expected (a truncated checkpoint, a missing tensor).
    #[error("{path}: {msg}")]
    Io {
        /// The file, as the caller named it.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error for `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }

    /// An invalid-argument error for `op`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }

    /// A file error naming `path`.
    pub fn io(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
}

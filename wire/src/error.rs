//! Errors of the codec: why a frame was refused (decode) or could not be built (encode).
//!
//! Owns the mapping from every decode failure to the `ErrorCode` a client receives, so the
//! gateway answers a refused request with `Result{request_id, code, reason}` without a table of
//! its own. Reasons are static strings: refusing a frame allocates nothing.

use crate::enums::ErrorCode;

/// A frame that was refused, with what to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.name())]
pub struct DecodeError {
    /// The request's id when the envelope was readable, so the refusal can be answered.
    pub request_id: Option<u64>,
    /// The code for the `Result` that answers it.
    pub code: ErrorCode,
    /// A short reason for the `Result` (never echoes input).
    pub reason: &'static str,
}

impl DecodeError {
    pub(crate) const fn new(code: ErrorCode, reason: &'static str) -> Self {
        Self {
            request_id: None,
            code,
            reason,
        }
    }

    pub(crate) const fn malformed(reason: &'static str) -> Self {
        Self::new(ErrorCode::Malformed, reason)
    }

    pub(crate) const fn invalid(reason: &'static str) -> Self {
        Self::new(ErrorCode::InvalidArgument, reason)
    }

    pub(crate) const fn with_request(mut self, request_id: u64) -> Self {
        self.request_id = Some(request_id);
        self
    }
}

/// A frame that could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame is larger than `frame_bytes_max`; nothing was written.
    #[error("encoded frame is {bytes} bytes, over frame_bytes_max {max}")]
    FrameTooLarge {
        /// Size of the encoded frame.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

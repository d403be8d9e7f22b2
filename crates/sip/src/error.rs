//! The one error type of `hatrunk-sip`.

/// What went wrong with a message or a socket. Parse errors carry the status code the element owes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    /// The message is malformed: answer a request with `status` (400, 416, 505...), drop a response.
    #[error("malformed SIP message ({status}): {reason}")]
    Malformed { status: u16, reason: String },
    /// A stream or datagram exceeded our size limit.
    #[error("SIP message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("transport error towards {peer}: {reason}")]
    Transport { peer: String, reason: String },
}

impl SipError {
    pub(crate) fn bad(reason: impl Into<String>) -> Self {
        SipError::Malformed { status: 400, reason: reason.into() }
    }
}

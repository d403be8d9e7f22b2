//! The one error type of `hatrunk-consensus`.

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    /// No leader could take the request (no majority reachable, or an election in progress).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The request names something that is not what it must be (an address that is not a hatrunk node).
    #[error("{0}")]
    Invalid(String),
    /// The request is understood but not allowed (unknown node, last voter...).
    #[error("{0}")]
    Refused(String),
}

impl From<bincode::Error> for ConsensusError {
    fn from(e: bincode::Error) -> Self {
        ConsensusError::Encoding(e.to_string())
    }
}

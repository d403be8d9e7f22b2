//! The one error type of `hatrunk-node`.

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config field `{field}`: {reason}")]
    Config { field: String, reason: String },
    #[error(transparent)]
    Trunk(#[from] hatrunk_core::CoreError),
    #[error("trunk {0} not found")]
    TrunkNotFound(String),
    /// A conditional trunk write found another revision (0: the trunk does not exist).
    #[error("trunk {trunk} changed since it was read: it is now at revision {current}{}", if *current == 0 { " (it does not exist)" } else { "" })]
    Stale { trunk: String, current: u64 },
    #[error("storage: {0}")]
    Storage(String),
    #[error("io on {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Sip(#[from] hatrunk_sip::SipError),
    /// Refused by the replicated state (e.g. a number already taken, the last voter).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Consensus(#[from] hatrunk_consensus::ConsensusError),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The cluster/admin gRPC server failed.
    #[error("admin server: {0}")]
    Server(String),
    /// The Raft core stopped on a fatal error (a failed disk write, say); the node exits.
    #[error("{0}")]
    RaftStopped(String),
}

impl From<sled::Error> for NodeError {
    fn from(e: sled::Error) -> Self {
        NodeError::Storage(e.to_string())
    }
}

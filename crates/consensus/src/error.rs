//! The one error type of `hatrunk-consensus`.

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("encoding: {0}")]
    Encoding(String),
}

impl From<sled::Error> for ConsensusError {
    fn from(e: sled::Error) -> Self {
        ConsensusError::Storage(e.to_string())
    }
}

impl From<bincode::Error> for ConsensusError {
    fn from(e: bincode::Error) -> Self {
        ConsensusError::Encoding(e.to_string())
    }
}

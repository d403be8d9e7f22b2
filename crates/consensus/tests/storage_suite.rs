//! openraft's own storage test suite against the log and state machine stores, on both backends.

use hatrunk_consensus::backend::{MemBackend, SledBackend};
use hatrunk_consensus::log_store::LogStore;
use hatrunk_consensus::sm_store::StateMachineStore;
use hatrunk_consensus::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore<SledBackend>, StateMachineStore<SledBackend>, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<SledBackend>, StateMachineStore<SledBackend>), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let db = sled::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let b = SledBackend::open(&db).map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(b.clone()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, LogStore::open(b), sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemBackend>, StateMachineStore<MemBackend>> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore<MemBackend>, StateMachineStore<MemBackend>), StorageError<u64>> {
        let b = MemBackend::default();
        let sm = StateMachineStore::open(b.clone()).map_err(|e| StorageIOError::write(&e))?;
        Ok(((), LogStore::open(b), sm))
    }
}

#[test]
fn openraft_storage_suite_on_sled() -> Result<(), StorageError<u64>> {
    Suite::test_all(SledBuilder)
}

#[test]
fn openraft_storage_suite_in_memory() -> Result<(), StorageError<u64>> {
    Suite::test_all(MemBuilder)
}

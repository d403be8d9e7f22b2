//! openraft's own storage test suite against the sled log and state machine stores.

use hatrunk_consensus::log_store::LogStore;
use hatrunk_consensus::sm_store::StateMachineStore;
use hatrunk_consensus::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let db = sled::open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = LogStore::open(&db).map_err(|e| openraft::StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(&db).map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_sled() -> Result<(), StorageError<u64>> {
    Suite::test_all(SledBuilder)
}

//! openraft's own storage test suite against the log and state machine stores: on the production
//! store over real files and over the memory disk, and on the key-value model.

// openraft's suite returns its StorageError (224 bytes).
#![allow(clippy::result_large_err)]

use hatrunk_consensus::backend::MemBackend;
use hatrunk_consensus::disk::crash::SimFs;
use hatrunk_consensus::disk::{DiskBackend, OsFs, StoreOptions};
use hatrunk_consensus::log_store::LogStore;
use hatrunk_consensus::sm_store::StateMachineStore;
use hatrunk_consensus::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore<DiskBackend>, StateMachineStore<DiskBackend>, tempfile::TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<DiskBackend>, StateMachineStore<DiskBackend>), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        // a small compaction threshold, so the suite runs across compactions too
        let opts = StoreOptions { compact_at_bytes: 4096, ..StoreOptions::default() };
        let b = DiskBackend::open(OsFs, &dir.path().join("raft"), opts).map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(b.clone()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, LogStore::open(b), sm))
    }
}

struct SimDiskBuilder;

impl StoreBuilder<TypeConfig, LogStore<DiskBackend<SimFs>>, StateMachineStore<DiskBackend<SimFs>>> for SimDiskBuilder {
    async fn build(&self) -> Result<((), LogStore<DiskBackend<SimFs>>, StateMachineStore<DiskBackend<SimFs>>), StorageError<u64>> {
        let b = DiskBackend::open(SimFs::default(), std::path::Path::new("/raft"), StoreOptions::default())
            .map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachineStore::open(b.clone()).map_err(|e| StorageIOError::write(&e))?;
        Ok(((), LogStore::open(b), sm))
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
fn openraft_storage_suite_on_disk() -> Result<(), StorageError<u64>> {
    Suite::test_all(DiskBuilder)
}

#[test]
fn openraft_storage_suite_on_the_memory_disk() -> Result<(), StorageError<u64>> {
    Suite::test_all(SimDiskBuilder)
}

#[test]
fn openraft_storage_suite_in_memory() -> Result<(), StorageError<u64>> {
    Suite::test_all(MemBuilder)
}

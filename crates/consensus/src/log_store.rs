//! The Raft log in sled (openraft storage-v2 `RaftLogStorage`).
//!
//! Entries live in tree `raft_log` under their index in big-endian (so sled's order is log order), as
//! bincode. Vote, committed id and last purged id live in tree `raft_meta`. Every write is followed
//! by a sled flush before it is acknowledged: the append callback fires only after a `flush_async`
//! that started after the entries were written, so an acknowledged entry is on disk (sled's known
//! weak spot is losing unflushed writes). Appends are group-committed: a flusher task acknowledges
//! every append queued while the previous flush ran with one flush (openraft allows the callback to
//! fire after `append` returns).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ConsensusError;
use crate::types::TypeConfig;

type NodeId = u64;
type SResult<T> = Result<T, StorageError<NodeId>>;

/// The sled-backed Raft log. Cheap to clone (sled trees are shared handles).
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Open the log (inside a tokio runtime: it starts the group-commit flusher).
    pub fn open(db: &sled::Db) -> Result<LogStore, ConsensusError> {
        let log = db.open_tree("raft_log")?;
        let (flusher, mut queue) = tokio::sync::mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
        let tree = log.clone();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = queue.try_recv() {
                    batch.push(more);
                }
                let flushed = tree.flush_async().await.map(|_| ()).map_err(|e| e.to_string());
                for cb in batch {
                    cb.log_io_completed(flushed.clone().map_err(std::io::Error::other));
                }
            }
        });
        Ok(LogStore { log, meta: db.open_tree("raft_meta")?, flusher })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> SResult<Option<T>> {
        let v = self.meta.get(key).map_err(|e| StorageIOError::read(&e))?;
        v.map(|b| bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e).into())).transpose()
    }

    /// Store a meta value; with `durable`, flush before returning (a sled flush covers the whole
    /// database, so it is paid only where Raft's safety needs it: vote and purge point).
    async fn put_meta<T: Serialize>(&self, key: &str, value: &T, durable: bool) -> SResult<()> {
        let b = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta.insert(key, b).map_err(|e| StorageIOError::write(&e))?;
        if durable {
            self.meta.flush_async().await.map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }

    fn last_entry_id(&self) -> SResult<Option<LogId<NodeId>>> {
        match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(key(start)..) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&k);
            if !range.contains(&u64::from_be_bytes(idx)) {
                break;
            }
            out.push(bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta("last_purged")?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        self.put_meta("vote", vote, true).await
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.get_meta("vote")
    }

    /// Not flushed: the committed id only lets a restarting node re-apply sooner; a stale one is
    /// safe (the node learns the commit index from the leader), a flush per commit is not cheap.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        self.put_meta("committed", &committed, false).await
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            let b = bincode::serialize(&e).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.insert(&key(e.log_id.index), b);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        // acknowledged by the flusher after its next flush, which covers this batch
        self.flusher.send(callback).map_err(|_| StorageIOError::write_logs(&std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let keys: Vec<sled::IVec> =
            self.log.range(key(log_id.index)..).keys().collect::<Result<_, _>>().map_err(|e| StorageIOError::write_logs(&e))?;
        for k in keys {
            self.log.remove(k).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        self.log.flush_async().await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // record the purge point first: a crash between the two steps leaves extra entries, never a hole
        self.put_meta("last_purged", &log_id, true).await?;
        let keys: Vec<sled::IVec> =
            self.log.range(..=key(log_id.index)).keys().collect::<Result<_, _>>().map_err(|e| StorageIOError::write_logs(&e))?;
        for k in keys {
            self.log.remove(k).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        self.log.flush_async().await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

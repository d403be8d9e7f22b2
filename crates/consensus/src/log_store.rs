//! The Raft log (openraft storage-v2 `RaftLogStorage`) over a [`Backend`] (the fdatasync'd
//! [`crate::disk::DiskBackend`] in production and in the simulation).
//!
//! Entries live in space `Log` under their index in big-endian (so key order is log order), as
//! bincode. Vote, committed id and last purged id live in space `Meta`. Every write Raft's safety
//! rests on is followed by a backend flush (a real `fdatasync`) before it is acknowledged: the
//! append callback fires only after a flush that started after the entries were written. Appends
//! are group-committed: a flusher task acknowledges every append queued while the previous flush
//! ran with one flush (openraft allows the callback to fire after `append` returns).

// openraft's traits return its StorageError (224 bytes); the helpers feeding them return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, Space};
use crate::types::TypeConfig;

type NodeId = u64;
type SResult<T> = Result<T, StorageError<NodeId>>;

fn io(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

/// The Raft log. Cheap to clone (backends are shared handles).
#[derive(Clone)]
pub struct LogStore<B: Backend> {
    b: B,
    flusher: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl<B: Backend> LogStore<B> {
    /// Open the log (inside a tokio runtime: it starts the group-commit flusher).
    pub fn open(b: B) -> LogStore<B> {
        let (flusher, mut queue) = tokio::sync::mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
        let disk = b.clone();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = queue.try_recv() {
                    batch.push(more);
                }
                let flushed = disk.flush().await;
                for cb in batch {
                    cb.log_io_completed(flushed.clone().map_err(io));
                }
            }
        });
        LogStore { b, flusher }
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> SResult<Option<T>> {
        let v = self.b.get(Space::Meta, key.as_bytes()).map_err(|e| StorageIOError::read(&io(e)))?;
        v.map(|b| bincode::deserialize(&b).map_err(|e| StorageIOError::read(&e).into())).transpose()
    }

    /// Store a meta value; with `durable`, flush before returning (a flush covers everything written,
    /// so it is paid only where Raft's safety needs it: vote and purge point).
    async fn put_meta<T: Serialize>(&self, key: &str, value: &T, durable: bool) -> SResult<()> {
        let v = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        self.b.insert(Space::Meta, vec![(key.as_bytes().to_vec(), v)]).map_err(|e| StorageIOError::write(&io(e)))?;
        if durable {
            self.b.flush().await.map_err(|e| StorageIOError::write(&io(e)))?;
        }
        Ok(())
    }

    fn last_entry_id(&self) -> SResult<Option<LogId<NodeId>>> {
        match self.b.last(Space::Log).map_err(|e| StorageIOError::read_logs(&io(e)))? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    /// Write entries without acknowledging them: [`RaftLogStorage::append`] is this plus a flush
    /// before its callback (public so the crash-state test can drive appends without openraft).
    pub fn write_entries(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> SResult<()> {
        let mut pairs = Vec::new();
        for e in entries {
            let v = bincode::serialize(&e).map_err(|e| StorageIOError::write_logs(&e))?;
            pairs.push((key(e.log_id.index).to_vec(), v));
        }
        self.b.insert(Space::Log, pairs).map_err(|e| StorageIOError::write_logs(&io(e)))?;
        Ok(())
    }

    fn keys_in(&self, from: u64, to: u64) -> SResult<Vec<Vec<u8>>> {
        let r = self.b.range(Space::Log, &key(from), &key(to)).map_err(|e| StorageIOError::write_logs(&io(e)))?;
        Ok(r.into_iter().map(|(k, _)| k).collect())
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl<B: Backend> RaftLogReader<TypeConfig> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => i - 1,
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Ok(Vec::new());
        }
        let pairs = self.b.range(Space::Log, &key(start), &key(end)).map_err(|e| StorageIOError::read_logs(&io(e)))?;
        pairs.into_iter().map(|(_, v)| bincode::deserialize(&v).map_err(|e| StorageIOError::read_logs(&e).into())).collect()
    }
}

impl<B: Backend> RaftLogStorage<TypeConfig> for LogStore<B> {
    type LogReader = LogStore<B>;

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
        self.write_entries(entries)?;
        // acknowledged by the flusher after its next flush, which covers this batch
        self.flusher.send(callback).map_err(|_| StorageIOError::write_logs(&io("log flusher stopped".into())))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let keys = self.keys_in(log_id.index, u64::MAX)?;
        self.b.remove(Space::Log, keys).map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.b.flush().await.map_err(|e| StorageIOError::write_logs(&io(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // record the purge point first: a crash between the two steps leaves extra entries, never a hole
        self.put_meta("last_purged", &log_id, true).await?;
        let keys = self.keys_in(0, log_id.index)?;
        self.b.remove(Space::Log, keys).map_err(|e| StorageIOError::write_logs(&io(e)))?;
        self.b.flush().await.map_err(|e| StorageIOError::write_logs(&io(e)))?;
        Ok(())
    }
}

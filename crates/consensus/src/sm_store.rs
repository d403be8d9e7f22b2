//! The state machine store (openraft storage-v2 `RaftStateMachine`): the [`ClusterState`] in memory,
//! shared with the node for local reads, and snapshots (bincode) persisted in the backend's
//! `Snapshot` space. On start the state is the last snapshot; openraft then re-applies the committed
//! log after it, so nothing acknowledged is lost without persisting the state on every apply.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Space};
use crate::error::ConsensusError;
use crate::state::ClusterState;
use crate::types::{NodeInfo, Response, TypeConfig};

type NodeId = u64;
type SResult<T> = Result<T, StorageError<NodeId>>;

/// Everything the state machine holds; also the snapshot's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, NodeInfo>,
    pub state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
}

/// Shared read access to the applied state, for the node's local reads.
pub type SharedState = Arc<RwLock<SmData>>;

#[derive(Clone)]
pub struct StateMachineStore<B: Backend> {
    data: SharedState,
    b: B,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

const CURRENT: &[u8] = b"current";

fn io(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

impl<B: Backend> StateMachineStore<B> {
    /// Open the store, starting from the last persisted snapshot (if any).
    pub fn open(b: B) -> Result<StateMachineStore<B>, ConsensusError> {
        let mut data = SmData::default();
        if let Some(raw) = b.get(Space::Snapshot, CURRENT).map_err(ConsensusError::Storage)? {
            let snap: StoredSnapshot = bincode::deserialize(&raw)?;
            data = bincode::deserialize(&snap.data)?;
        }
        Ok(StateMachineStore { data: Arc::new(RwLock::new(data)), b, counter: Arc::default() })
    }

    pub fn shared(&self) -> SharedState {
        self.data.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn save(&self, meta: &SnapshotMeta<NodeId, NodeInfo>, data: Vec<u8>) -> SResult<()> {
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let raw = bincode::serialize(&stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.b
            .insert(Space::Snapshot, vec![(CURRENT.to_vec(), raw)])
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io(e)))?;
        self.b.flush().await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io(e)))?;
        Ok(())
    }
}

impl<B: Backend> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<B> {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let (bytes, last_applied, membership) = {
            let d = self.read();
            let bytes = bincode::serialize(&*d).map_err(|e| StorageIOError::read_state_machine(&e))?;
            (bytes, d.last_applied, d.last_membership.clone())
        };
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = format!("{}-{n}", last_applied.map(|l| l.index).unwrap_or(0));
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.save(&meta, bytes.clone()).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl<B: Backend> RaftStateMachine<TypeConfig> for StateMachineStore<B> {
    type SnapshotBuilder = StateMachineStore<B>;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>)> {
        let d = self.read();
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.write();
        let mut out = Vec::new();
        for e in entries {
            d.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::default()),
                EntryPayload::Normal(req) => {
                    let result = d.state.apply(&req);
                    out.push(Response { result: Some(result) });
                }
                EntryPayload::Membership(m) => {
                    d.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, NodeInfo>, snapshot: Box<Cursor<Vec<u8>>>) -> SResult<()> {
        let bytes = snapshot.into_inner();
        let data: SmData = bincode::deserialize(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.save(meta, bytes).await?;
        *self.write() = SmData { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone(), state: data.state };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let Some(raw) = self.b.get(Space::Snapshot, CURRENT).map_err(|e| StorageIOError::read_snapshot(None, &io(e)))? else {
            return Ok(None);
        };
        let s: StoredSnapshot = bincode::deserialize(&raw).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

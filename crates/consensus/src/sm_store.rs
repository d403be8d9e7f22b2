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

/// A snapshot as persisted: its bytes carry a SHA-256, because bincode reads most corrupted bytes
/// as *some* state, and a node starting from a silently wrong state would serve it as committed.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
    sha256: Vec<u8>,
}

fn digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// The first bytes of a snapshot's content since format 2; format 1 had no tag.
const FORMAT2: &[u8] = b"hatrunk-state/2\n";

/// The data format this release writes (`hatrunk --version` names it). Format 3 changed only how
/// a trunk is written (`trunk_wire`); snapshots keep format 2's tag and layout around it.
pub const DATA_FORMAT: u32 = 3;

fn encode(d: &SmData) -> Result<Vec<u8>, bincode::Error> {
    let mut out = FORMAT2.to_vec();
    bincode::serialize_into(&mut out, d)?;
    Ok(out)
}

/// A snapshot's content, of this format or the one before.
pub fn decode(bytes: &[u8]) -> Result<SmData, bincode::Error> {
    match bytes.strip_prefix(FORMAT2) {
        Some(rest) => bincode::deserialize(rest),
        None => bincode::deserialize::<crate::legacy::SmDataV1>(bytes).map(SmData::from),
    }
}

/// Read a persisted snapshot, refusing one whose bytes do not match their checksum.
fn load(raw: &[u8]) -> Result<StoredSnapshot, String> {
    let s: StoredSnapshot = bincode::deserialize(raw).map_err(|e| format!("unreadable ({e})"))?;
    if digest(&s.data) != s.sha256 {
        return Err("its checksum does not match its contents".into());
    }
    Ok(s)
}

/// What an operator reads when the local snapshot is damaged.
pub const CORRUPT_HINT: &str = "the node's Raft snapshot is corrupt; the node will not start from it. Move its data directory \
aside and add the node again with `hatrunk cluster remove` + `hatrunk cluster join`: it then copies the state from the cluster";

/// Shared read access to the applied state, for the node's local reads.
pub type SharedState = Arc<RwLock<SmData>>;

#[derive(Clone)]
pub struct StateMachineStore<B: Backend> {
    data: SharedState,
    b: B,
    counter: Arc<std::sync::atomic::AtomicU64>,
    /// Woken after every batch of commands applied (see [`StateMachineStore::applied`]).
    applied: Arc<tokio::sync::Notify>,
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
            let snap = load(&raw).map_err(|why| ConsensusError::Storage(format!("{CORRUPT_HINT} ({why})")))?;
            data = decode(&snap.data).map_err(|e| ConsensusError::Storage(format!("{CORRUPT_HINT} ({e})")))?;
        }
        Ok(StateMachineStore { data: Arc::new(RwLock::new(data)), b, counter: Arc::default(), applied: Arc::default() })
    }

    pub fn shared(&self) -> SharedState {
        self.data.clone()
    }

    /// Notified each time commands were applied: who waits for another node's share change
    /// (a starved node, its neighbours giving back) looks again then instead of polling.
    pub fn applied(&self) -> Arc<tokio::sync::Notify> {
        self.applied.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn save(&self, meta: &SnapshotMeta<NodeId, NodeInfo>, data: Vec<u8>) -> SResult<()> {
        let stored = StoredSnapshot { meta: meta.clone(), sha256: digest(&data), data };
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
            let bytes = encode(&d).map_err(|e| StorageIOError::read_state_machine(&e))?;
            (bytes, d.last_applied, d.last_membership.clone())
        };
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = format!("{}-{n}", last_applied.map(|l| l.index).unwrap_or(0));
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.save(&meta, bytes.clone()).await?;
        tracing::debug!(id = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
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
        let mut out = Vec::new();
        let mut normal = false;
        let mut d = self.write();
        for e in entries {
            d.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::default()),
                EntryPayload::Normal(req) => {
                    let result = d.state.apply(&req);
                    out.push(Response { result: Some(result) });
                    normal = true;
                }
                EntryPayload::Membership(m) => {
                    d.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::default());
                }
            }
        }
        drop(d);
        if normal {
            self.applied.notify_waiters();
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
        let data: SmData = decode(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let size = bytes.len();
        self.save(meta, bytes).await?;
        tracing::info!(id = %meta.snapshot_id, bytes = size, "installed a snapshot sent by the leader (this member was too far behind for the log)");
        *self.write() = SmData { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone(), state: data.state };
        self.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let Some(raw) = self.b.get(Space::Snapshot, CURRENT).map_err(|e| StorageIOError::read_snapshot(None, &io(e)))? else {
            return Ok(None);
        };
        let s = load(&raw).map_err(|why| StorageIOError::read_snapshot(None, &io(format!("{CORRUPT_HINT} ({why})"))))?;
        Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemBackend, Space};

    /// A snapshot whose bytes were damaged on disk is refused with the way out, not loaded.
    #[tokio::test]
    async fn a_corrupt_snapshot_is_refused_at_open() {
        let b = MemBackend::default();
        let mut sm = StateMachineStore::open(b.clone()).expect("open");
        sm.build_snapshot().await.expect("snapshot");
        assert!(StateMachineStore::open(b.clone()).is_ok(), "an intact snapshot opens");
        let mut raw = b.get(Space::Snapshot, CURRENT).expect("get").expect("stored");
        let at = raw.len() - 41; // the last byte of the state (the checksum, 8 + 32 bytes, follows)
        raw[at] ^= 0x5a;
        b.insert(Space::Snapshot, vec![(CURRENT.to_vec(), raw)]).expect("insert");
        let e = StateMachineStore::open(b).err().expect("refused");
        assert!(e.to_string().contains("snapshot is corrupt") && e.to_string().contains("cluster join"), "{e}");
    }
}

//! Where the Raft stores keep their bytes: sled on disk, or memory for the simulation. The stores
//! (`log_store`, `sm_store`) are written once against [`Backend`]; what differs is only durability.
//!
//! [`MemBackend`] models a disk: writes are visible at once but durable only after `flush`, and
//! [`MemBackend::crash`] throws away whatever was not flushed, as a power cut would. A store reopened
//! on the same `MemBackend` after a crash sees exactly what a real disk would have kept.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The three keyspaces the stores use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Log,
    Meta,
    Snapshot,
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

pub trait Backend: Clone + Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Insert several pairs atomically.
    fn insert(&self, space: Space, pairs: Vec<KeyValue>) -> Result<(), String>;
    fn remove(&self, space: Space, keys: Vec<Vec<u8>>) -> Result<(), String>;
    /// Pairs with `from <= key <= to`, in key order.
    fn range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>, String>;
    fn last(&self, space: Space) -> Result<Option<KeyValue>, String>;
    /// Make every write so far durable.
    fn flush(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// sled: one tree per space.
#[derive(Clone)]
pub struct SledBackend {
    log: sled::Tree,
    meta: sled::Tree,
    snapshot: sled::Tree,
}

impl SledBackend {
    pub fn open(db: &sled::Db) -> Result<SledBackend, sled::Error> {
        Ok(SledBackend { log: db.open_tree("raft_log")?, meta: db.open_tree("raft_meta")?, snapshot: db.open_tree("raft_snapshot")? })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Log => &self.log,
            Space::Meta => &self.meta,
            Space::Snapshot => &self.snapshot,
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.tree(space).get(key).map(|v| v.map(|v| v.to_vec())).map_err(|e| e.to_string())
    }

    fn insert(&self, space: Space, pairs: Vec<KeyValue>) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        self.tree(space).apply_batch(batch).map_err(|e| e.to_string())
    }

    fn remove(&self, space: Space, keys: Vec<Vec<u8>>) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.tree(space).apply_batch(batch).map_err(|e| e.to_string())
    }

    fn range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>, String> {
        self.tree(space).range(from..=to).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| e.to_string())).collect()
    }

    fn last(&self, space: Space) -> Result<Option<KeyValue>, String> {
        self.tree(space).last().map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec()))).map_err(|e| e.to_string())
    }

    async fn flush(&self) -> Result<(), String> {
        // one sled flush covers every tree of the database
        self.log.flush_async().await.map(|_| ()).map_err(|e| e.to_string())
    }
}

type Maps = BTreeMap<Space, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
struct MemDisk {
    /// What a reader sees (durable + not yet flushed).
    live: Maps,
    /// What survives a crash.
    durable: Maps,
    /// Writes since the last flush, in order: (space, key, Some(value) = insert / None = remove).
    pending: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
}

/// An in-memory "disk" for deterministic simulation: shared by the stores of one simulated node
/// across crashes and restarts.
#[derive(Clone, Default)]
pub struct MemBackend {
    disk: Arc<Mutex<MemDisk>>,
}

impl MemBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemDisk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lose every write not flushed yet, as a crash of the node would.
    pub fn crash(&self) {
        let mut d = self.lock();
        d.pending.clear();
        d.live = d.durable.clone();
    }
}

impl Backend for MemBackend {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.lock().live.get(&space).and_then(|m| m.get(key)).cloned())
    }

    fn insert(&self, space: Space, pairs: Vec<KeyValue>) -> Result<(), String> {
        let mut d = self.lock();
        for (k, v) in pairs {
            d.live.entry(space).or_default().insert(k.clone(), v.clone());
            d.pending.push((space, k, Some(v)));
        }
        Ok(())
    }

    fn remove(&self, space: Space, keys: Vec<Vec<u8>>) -> Result<(), String> {
        let mut d = self.lock();
        for k in keys {
            if let Some(m) = d.live.get_mut(&space) {
                m.remove(&k);
            }
            d.pending.push((space, k, None));
        }
        Ok(())
    }

    fn range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Vec<KeyValue>, String> {
        let d = self.lock();
        Ok(d.live
            .get(&space)
            .map(|m| m.range(from.to_vec()..=to.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn last(&self, space: Space) -> Result<Option<KeyValue>, String> {
        Ok(self.lock().live.get(&space).and_then(|m| m.iter().next_back()).map(|(k, v)| (k.clone(), v.clone())))
    }

    async fn flush(&self) -> Result<(), String> {
        let mut d = self.lock();
        let pending = std::mem::take(&mut d.pending);
        for (space, k, v) in pending {
            let m = d.durable.entry(space).or_default();
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_crash_loses_exactly_the_unflushed_writes() {
        let b = MemBackend::default();
        b.insert(Space::Log, vec![(vec![1], vec![10])]).expect("insert");
        b.flush().await.expect("flush");
        b.insert(Space::Log, vec![(vec![2], vec![20])]).expect("insert");
        b.remove(Space::Log, vec![vec![1]]).expect("remove");
        assert_eq!(b.get(Space::Log, &[1]).expect("get"), None, "reads see unflushed writes");
        b.crash();
        assert_eq!(b.get(Space::Log, &[1]).expect("get"), Some(vec![10]));
        assert_eq!(b.get(Space::Log, &[2]).expect("get"), None);
    }
}

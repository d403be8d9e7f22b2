//! Where the Raft stores keep their bytes. The stores (`log_store`, `sm_store`) are written once
//! against [`Backend`]; production and the simulation run [`crate::disk::DiskBackend`] (over real
//! files, or over the memory disk of [`crate::disk::crash`]).
//!
//! [`MemBackend`], a key-value model without files, stays for unit tests of the stores: it models a disk: writes are visible at once but durable only after `flush`, and
//! [`MemBackend::crash`] throws away whatever was not flushed, as a power cut would. A store reopened
//! on the same `MemBackend` after a crash sees exactly what a real disk would have kept.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The keyspaces: the Raft log, its metadata (vote, purge point), snapshots, and the node's own
/// values kept beside them (its nonce secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Log,
    Meta,
    Snapshot,
    Node,
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

/// Key spaces held in memory, as both backends keep them.
pub(crate) type Maps = BTreeMap<Space, BTreeMap<Vec<u8>, Vec<u8>>>;

/// [`Backend::range`] over maps in memory.
pub(crate) fn range_of(maps: &Maps, space: Space, from: &[u8], to: &[u8]) -> Vec<KeyValue> {
    maps.get(&space).map(|m| m.range(from.to_vec()..=to.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// [`Backend::last`] over maps in memory.
pub(crate) fn last_of(maps: &Maps, space: Space) -> Option<KeyValue> {
    maps.get(&space).and_then(|m| m.iter().next_back()).map(|(k, v)| (k.clone(), v.clone()))
}

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
        Ok(range_of(&self.lock().live, space, from, to))
    }

    fn last(&self, space: Space) -> Result<Option<KeyValue>, String> {
        Ok(last_of(&self.lock().live, space))
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

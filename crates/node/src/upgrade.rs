//! Opening the node's Raft store, and carrying a data directory written by a release that kept it in
//! sled (`<data_dir>/db`) into the new store (`<data_dir>/raft`), once, at start.
//!
//! Why at start and not by a separate command: a rolling upgrade then is "stop the node, replace the
//! binary, start it", the node keeps its identity, vote and log, and rejoins with nothing to copy.
//! The conversion is all or nothing: it writes into `raft.upgrading`, syncs, and only then renames
//! that to `raft` (directory synced), so a crash midway leaves the sled data in charge and the next
//! start converts again. The sled directory is then renamed `db.migrated` and kept: putting it back
//! is how to return to the previous release (with the state as of the upgrade). sled stays a
//! dependency only for this read (docs/decisions.md).

use std::path::Path;

use hatrunk_consensus::backend::{Backend, Space};
use hatrunk_consensus::disk::{DiskBackend, Fs, OsFs, StoreOptions};

use crate::error::NodeError;

fn storage(what: &str, p: &Path, e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("{what} {}: {e}", p.display()))
}

/// Open `<data_dir>/raft`, converting a sled data directory first if that is what is there.
pub async fn open_store(data_dir: &Path) -> Result<DiskBackend, NodeError> {
    let raft = data_dir.join("raft");
    let sled_dir = data_dir.join("db");
    if !raft.exists() && sled_dir.exists() {
        convert(&sled_dir, &raft).await?;
    }
    Ok(DiskBackend::open(OsFs, &raft, StoreOptions::default())?)
}

/// The trees the sled release kept, and where their pairs go (keys and values are unchanged: the
/// log and state machine stores wrote the same bytes through the old backend).
const TREES: [(&str, Space); 3] = [("raft_log", Space::Log), ("raft_meta", Space::Meta), ("raft_snapshot", Space::Snapshot)];

async fn convert(sled_dir: &Path, raft: &Path) -> Result<(), NodeError> {
    let staging = raft.with_file_name("raft.upgrading");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| storage("cannot clear an interrupted upgrade in", &staging, e))?;
    }
    let db = sled::Config::new().path(sled_dir).open().map_err(|e| {
        storage(
            "cannot read the previous release's data (to convert it) in",
            sled_dir,
            format!("{e}; start the previous release once to repair it, then this one"),
        )
    })?;
    let store = DiskBackend::open(OsFs, &staging, StoreOptions::default())?;
    let mut entries = 0usize;
    for (tree, space) in TREES {
        let t = db.open_tree(tree)?;
        let mut pairs = Vec::new();
        for kv in t.iter() {
            let (k, v) = kv?;
            pairs.push((k.to_vec(), v.to_vec()));
        }
        entries += pairs.len();
        if !pairs.is_empty() {
            store.insert(space, pairs).map_err(NodeError::Storage)?;
        }
    }
    if let Some(secret) = db.get("nonce_secret")? {
        store.insert(Space::Node, vec![(SECRET.to_vec(), secret.to_vec())]).map_err(NodeError::Storage)?;
    }
    store.flush().await.map_err(NodeError::Storage)?;
    drop(store);
    drop(db);
    std::fs::rename(&staging, raft).map_err(|e| storage("cannot move the converted store into", raft, e))?;
    let parent = raft.parent().unwrap_or(Path::new("."));
    OsFs.sync_dir(parent).map_err(|e| storage("cannot sync", parent, e))?;
    let kept = sled_dir.with_file_name("db.migrated");
    std::fs::rename(sled_dir, &kept).map_err(|e| storage("converted, but cannot rename", sled_dir, e))?;
    OsFs.sync_dir(parent).map_err(|e| storage("cannot sync", parent, e))?;
    tracing::info!(from = %sled_dir.display(), to = %raft.display(), pairs = entries, kept = %kept.display(), "data directory converted from the previous release's store");
    Ok(())
}

const SECRET: &[u8] = b"nonce_secret";

/// A per-node secret for digest nonces, created once and kept in the store.
pub async fn node_secret<B: Backend>(store: &B) -> Result<String, NodeError> {
    if let Some(v) = store.get(Space::Node, SECRET).map_err(NodeError::Storage)? {
        return Ok(String::from_utf8_lossy(&v).into_owned());
    }
    let s: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    store.insert(Space::Node, vec![(SECRET.to_vec(), s.as_bytes().to_vec())]).map_err(NodeError::Storage)?;
    store.flush().await.map_err(NodeError::Storage)?;
    Ok(s)
}

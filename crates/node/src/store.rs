//! The trunk configuration store: an interface the call path reads locally, and a sled-backed
//! single-node implementation that survives restarts. The consensus layer implements the same trait
//! over the replicated state machine; the SIP path does not change.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use hatrunk_core::trunk::{check_numbers_free, AuthMode, Role, Trunk};

use crate::error::NodeError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where trunks live. Reads are local and cheap (the call path uses them per call); writes are
/// acknowledged only once durable.
pub trait TrunkStore: Send + Sync {
    fn apply(&self, trunk: Trunk) -> BoxFuture<'_, Result<(), NodeError>>;
    fn delete(&self, id: String) -> BoxFuture<'_, Result<(), NodeError>>;
    fn get(&self, id: &str) -> Option<Arc<Trunk>>;
    fn list(&self) -> Vec<Arc<Trunk>>;
    fn by_number(&self, number: &str) -> Option<Arc<Trunk>>;
    /// IP-authenticated accounts whose whitelist holds `ip`.
    fn by_source(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)>;
    /// The Digest account with this username.
    fn by_username(&self, user: &str) -> Option<(Arc<Trunk>, Role)>;
}

#[derive(Default)]
struct Index {
    trunks: HashMap<String, Arc<Trunk>>,
    numbers: HashMap<String, String>,
}

impl Index {
    fn insert(&mut self, t: Trunk) {
        self.remove(&t.id.clone());
        for n in &t.numbers {
            self.numbers.insert(n.clone(), t.id.clone());
        }
        self.trunks.insert(t.id.clone(), Arc::new(t));
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.trunks.remove(id) {
            Some(old) => {
                for n in &old.numbers {
                    self.numbers.remove(n);
                }
                true
            }
            None => false,
        }
    }
}

/// Trunks in a sled tree (one JSON value per trunk), indexed in memory.
pub struct SledTrunkStore {
    tree: sled::Tree,
    index: RwLock<Index>,
    write: tokio::sync::Mutex<()>,
}

impl SledTrunkStore {
    pub fn open(db: &sled::Db) -> Result<Self, NodeError> {
        let tree = db.open_tree("trunks")?;
        let mut index = Index::default();
        for item in tree.iter() {
            let (k, v) = item?;
            let t: Trunk = serde_json::from_slice(&v)
                .map_err(|e| NodeError::Storage(format!("trunk {:?} is unreadable: {e}", String::from_utf8_lossy(&k))))?;
            index.insert(t);
        }
        Ok(SledTrunkStore { tree, index: RwLock::new(index), write: tokio::sync::Mutex::new(()) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl TrunkStore for SledTrunkStore {
    fn apply(&self, trunk: Trunk) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let _w = self.write.lock().await;
            {
                let idx = self.read();
                check_numbers_free(&trunk, |n| idx.numbers.get(n).map(String::as_str))?;
            }
            let bytes = serde_json::to_vec(&trunk).map_err(|e| NodeError::Storage(e.to_string()))?;
            self.tree.insert(trunk.id.as_bytes(), bytes)?;
            self.tree.flush_async().await?;
            self.index.write().unwrap_or_else(|p| p.into_inner()).insert(trunk);
            Ok(())
        })
    }

    fn delete(&self, id: String) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let _w = self.write.lock().await;
            if self.tree.remove(id.as_bytes())?.is_none() {
                return Err(NodeError::TrunkNotFound(id));
            }
            self.tree.flush_async().await?;
            self.index.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Option<Arc<Trunk>> {
        self.read().trunks.get(id).cloned()
    }

    fn list(&self) -> Vec<Arc<Trunk>> {
        let mut v: Vec<_> = self.read().trunks.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn by_number(&self, number: &str) -> Option<Arc<Trunk>> {
        let idx = self.read();
        idx.numbers.get(number).and_then(|id| idx.trunks.get(id)).cloned()
    }

    fn by_source(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)> {
        let mut out = Vec::new();
        for t in self.list() {
            for role in [Role::Primary, Role::Secondary] {
                if let Some(a) = t.account(role) {
                    if a.auth == AuthMode::Ip && a.allows(ip) {
                        out.push((t.clone(), role));
                    }
                }
            }
        }
        out
    }

    fn by_username(&self, user: &str) -> Option<(Arc<Trunk>, Role)> {
        self.list().into_iter().find_map(|t| {
            [Role::Primary, Role::Secondary].into_iter().find_map(|role| {
                let a = t.account(role)?;
                (a.auth == AuthMode::Digest && a.username.as_deref() == Some(user)).then(|| (t.clone(), role))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(id: &str, number: &str) -> Trunk {
        hatrunk_core::trunk::parse_trunk(&format!(
            "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = 2\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:5999\"\nallowed_ips = [\"127.0.0.1\"]\n"
        ))
        .expect("trunk")
    }

    #[tokio::test]
    async fn persists_and_refuses_taken_numbers() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let db = sled::open(dir.path()).expect("db");
            let s = SledTrunkStore::open(&db).expect("store");
            s.apply(trunk("a", "1000")).await.expect("apply");
            let e = s.apply(trunk("b", "1000")).await.expect_err("taken");
            assert!(e.to_string().contains("1000 already belongs to trunk a"), "{e}");
            assert!(s.get("b").is_none());
        }
        let db = sled::open(dir.path()).expect("db");
        let s = SledTrunkStore::open(&db).expect("reopen");
        assert_eq!(s.by_number("1000").map(|t| t.id.clone()).as_deref(), Some("a"));
        assert_eq!(s.by_source("127.0.0.1".parse().expect("ip")).len(), 1);
        s.delete("a".into()).await.expect("delete");
        assert!(s.by_number("1000").is_none());
    }
}

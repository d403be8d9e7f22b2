//! Admission: taking and giving back slots of a trunk's shared pool. The call path sees only the
//! [`Admission`] trait; this single-node implementation applies [`hatrunk_core::pool::Pool`] under a
//! lock. The consensus issue backs the same trait with the replicated pool.

use std::sync::Mutex;

use hatrunk_core::pool::{Admission as Decision, Pool};

use crate::error::NodeError;
use crate::store::BoxFuture;

pub trait Admission: Send + Sync {
    /// Take a slot of `trunk` for `call` (idempotent per call).
    fn admit(&self, trunk: String, limit: u32, call: String) -> BoxFuture<'_, Result<Decision, NodeError>>;
    /// Give `call`'s slot back (harmless if it holds none).
    fn release(&self, call: String) -> BoxFuture<'_, Result<(), NodeError>>;
    /// Slots in use per trunk, as this node sees them.
    fn usage(&self) -> Vec<(String, u32)>;
}

/// The pool of a single node.
#[derive(Default)]
pub struct LocalAdmission {
    pool: Mutex<Pool>,
}

impl LocalAdmission {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Admission for LocalAdmission {
    fn admit(&self, trunk: String, limit: u32, call: String) -> BoxFuture<'_, Result<Decision, NodeError>> {
        let d = self.pool().admit(&trunk, limit, &call);
        Box::pin(async move { Ok(d) })
    }

    fn release(&self, call: String) -> BoxFuture<'_, Result<(), NodeError>> {
        self.pool().release(&call);
        Box::pin(async { Ok(()) })
    }

    fn usage(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self.pool().usage().map(|(t, n)| (t.to_string(), n)).collect();
        v.sort();
        v
    }
}

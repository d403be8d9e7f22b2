//! The trunk configuration store: an interface the call path reads locally, implemented over the
//! Raft group's replicated state. Writes go through consensus (acknowledged once committed by a
//! majority); reads are local to this node's applied state, as routing needs them to be fast.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use hatrunk_consensus::raft::Consensus;
use hatrunk_consensus::{Command, CommandResult, Expect};
use hatrunk_core::trunk::{AuthMode, Role, Trunk};

use crate::error::NodeError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where trunks live. Reads are local and cheap (the call path uses them per call); writes are
/// acknowledged only once durable.
pub trait TrunkStore: Send + Sync {
    /// Store `trunk` if it is as `expect` says (compare-and-swap); its new revision.
    fn apply(&self, trunk: Trunk, expect: Expect) -> BoxFuture<'_, Result<u64, NodeError>>;
    /// Delete a trunk; refused while slots of it are held, unless `force`.
    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<(), NodeError>>;
    /// The trunk's revision in this node's applied state (0: no such trunk).
    fn revision(&self, id: &str) -> u64;
    fn get(&self, id: &str) -> Option<Arc<Trunk>>;
    fn list(&self) -> Vec<Arc<Trunk>>;
    fn by_number(&self, number: &str) -> Option<Arc<Trunk>>;
    /// IP-authenticated accounts whose whitelist holds `ip`.
    fn by_source(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)>;
    /// The Digest account with this username.
    fn by_username(&self, user: &str) -> Option<(Arc<Trunk>, Role)>;
    /// Record (or, with `expires_ms` 0, remove) a Digest account's binding cluster-wide, so any node
    /// can deliver to a PBX registered through another.
    fn register(&self, user: String, contact: String, route: String, expires_ms: u64) -> BoxFuture<'_, Result<(), NodeError>>;
    /// The replicated binding of `user`: (contact, route, expires_ms).
    fn registration(&self, user: &str) -> Option<(String, String, u64)>;
    /// The cluster's shared secret, once committed (forwarded calls are signed with it).
    fn cluster_secret(&self) -> Option<String> {
        None
    }
    /// How far this node's applied state has come: the Raft index of the last entry applied, the
    /// same on every member for the same entry (a forward carries the ingress's, `catch_up.rs`).
    fn applied(&self) -> u64;
}

/// Map a command's result to the store's error vocabulary.
pub(crate) fn outcome(r: CommandResult) -> Result<CommandResult, NodeError> {
    match r {
        CommandResult::Refused(m) => Err(NodeError::Refused(m)),
        CommandResult::NotFound(id) => Err(NodeError::TrunkNotFound(id)),
        CommandResult::Stale { trunk, current } => Err(NodeError::Stale { trunk, current }),
        CommandResult::Fenced { node, epoch, current } => {
            Err(NodeError::Refused(format!("node {node}: a write of its process of epoch {epoch} refused, epoch {current} runs now")))
        }
        other => Ok(other),
    }
}

/// How long a trunk write waits for this node to apply what the leader committed.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Trunks in the replicated state machine.
pub struct RaftTrunkStore {
    consensus: Arc<Consensus>,
}

impl RaftTrunkStore {
    pub fn new(consensus: Arc<Consensus>) -> Self {
        RaftTrunkStore { consensus }
    }
}

impl TrunkStore for RaftTrunkStore {
    fn apply(&self, trunk: Trunk, expect: Expect) -> BoxFuture<'_, Result<u64, NodeError>> {
        Box::pin(async move {
            let id = trunk.id.clone();
            match outcome(self.consensus.write(Command::PutTrunkIf { trunk: Box::new(trunk), expect }).await?)? {
                CommandResult::Revision(r) => {
                    // read-your-writes here: once `trunk apply` through this node returns, this
                    // node routes the trunk (calls sent to it at once got 404 while it lagged the
                    // leader by a heartbeat; e2e_ha, 2026-12-01). Committed either way: a member
                    // that cannot catch up within the wait still answers with the revision.
                    if !self.consensus.local_until(CATCH_UP, |s| s.fences.revision(&id) >= r).await {
                        tracing::warn!(trunk = %id, revision = r, "trunk committed but not yet applied on this node");
                    }
                    Ok(r)
                }
                other => Err(NodeError::Refused(format!("unexpected trunk write result {other:?}"))),
            }
        })
    }

    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            outcome(self.consensus.write(Command::DeleteTrunkIf { id: id.clone(), force }).await?)?;
            // as for apply: once the delete returns, this node routes the trunk no more
            if !self.consensus.local_until(CATCH_UP, |s| !s.trunks.contains_key(&id)).await {
                tracing::warn!(trunk = %id, "trunk deletion committed but not yet applied on this node");
            }
            Ok(())
        })
    }

    fn revision(&self, id: &str) -> u64 {
        self.consensus.local(|s| s.fences.revision(id))
    }

    fn get(&self, id: &str) -> Option<Arc<Trunk>> {
        self.consensus.local(|s| s.trunks.get(id).cloned())
    }

    fn list(&self) -> Vec<Arc<Trunk>> {
        self.consensus.local(|s| s.trunks.values().cloned().collect())
    }

    fn by_number(&self, number: &str) -> Option<Arc<Trunk>> {
        self.consensus.local(|s| s.numbers.get(number).and_then(|id| s.trunks.get(id)).cloned())
    }

    fn by_source(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)> {
        self.consensus.local(|s| {
            let mut out = Vec::new();
            for t in s.trunks.values() {
                for role in [Role::Primary, Role::Secondary] {
                    if t.account(role).is_some_and(|a| a.auth == AuthMode::Ip && a.allows(ip)) {
                        out.push((t.clone(), role));
                    }
                }
            }
            out
        })
    }

    fn register(&self, user: String, contact: String, route: String, expires_ms: u64) -> BoxFuture<'_, Result<(), NodeError>> {
        let cmd = Command::Register { username: user, contact, route, expires_ms };
        Box::pin(async move { outcome(self.consensus.write(cmd).await?).map(|_| ()) })
    }

    fn registration(&self, user: &str) -> Option<(String, String, u64)> {
        self.consensus.local(|s| s.registrations.get(user).map(|r| (r.contact.clone(), r.route.clone(), r.expires_ms)))
    }

    fn cluster_secret(&self) -> Option<String> {
        self.consensus.local(|s| s.cluster_secret.as_ref().map(|x| x.0.clone()))
    }

    fn applied(&self) -> u64 {
        self.consensus.applied_index()
    }

    fn by_username(&self, user: &str) -> Option<(Arc<Trunk>, Role)> {
        self.consensus.local(|s| {
            s.trunks.values().find_map(|t| {
                [Role::Primary, Role::Secondary].into_iter().find_map(|role| {
                    let a = t.account(role)?;
                    (a.auth == AuthMode::Digest && a.username.as_deref() == Some(user)).then(|| (t.clone(), role))
                })
            })
        })
    }
}

//! Admission: taking and giving back slots of a trunk's shared pool. The call path sees only the
//! [`Admission`] trait; [`RaftAdmission`] makes every admit and release a Raft command, so the
//! decision of who holds a slot is made once, by the replicated state machine, for the whole
//! cluster (see docs/consensus.md for why this design and what it costs).

use std::sync::Arc;

use hatrunk_consensus::raft::Consensus;
use hatrunk_consensus::{Command, CommandResult};
use hatrunk_core::pool::Admission as Decision;

use crate::error::NodeError;
use crate::store::{outcome, BoxFuture};

pub trait Admission: Send + Sync {
    /// Take a slot of `trunk` for `call` (idempotent per call). The replicated trunk's limit is the
    /// one enforced; `limit` is what the caller saw, for logs.
    fn admit(&self, trunk: String, limit: u32, call: String) -> BoxFuture<'_, Result<Decision, NodeError>>;
    /// Give `call`'s slot back (harmless if it holds none).
    fn release(&self, call: String) -> BoxFuture<'_, Result<(), NodeError>>;
    /// Slots in use per trunk, as this node's applied state sees them.
    fn usage(&self) -> Vec<(String, u32)>;
}

pub struct RaftAdmission {
    consensus: Arc<Consensus>,
    node: String,
    reconciled: tokio::sync::OnceCell<()>,
}

impl RaftAdmission {
    /// `node` is this node's name, the prefix of every slot it takes.
    pub fn new(consensus: Arc<Consensus>, node: String) -> Self {
        RaftAdmission { consensus, node, reconciled: tokio::sync::OnceCell::new() }
    }

    /// Give back every slot this node held before it (re)started: its calls lived in the process
    /// that is gone. Done once, and always before this node's first admission, so a release of old
    /// slots can never hit a call admitted by this process.
    pub async fn reconcile(&self) -> Result<(), NodeError> {
        self.reconciled
            .get_or_try_init(|| async {
                outcome(self.consensus.write(Command::ReleaseNode { node: self.node.clone() }).await?)?;
                tracing::info!(node = %self.node, "slots of previous runs released");
                Ok::<(), NodeError>(())
            })
            .await
            .map(|_| ())
    }
}

impl Admission for RaftAdmission {
    fn admit(&self, trunk: String, _limit: u32, call: String) -> BoxFuture<'_, Result<Decision, NodeError>> {
        Box::pin(async move {
            self.reconcile().await?;
            match outcome(self.consensus.write(Command::Admit { trunk: trunk.clone(), slot: call }).await?)? {
                CommandResult::Admission(d) => Ok(d),
                other => Err(NodeError::Refused(format!("unexpected admission result {other:?} for trunk {trunk}"))),
            }
        })
    }

    fn release(&self, call: String) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { outcome(self.consensus.write(Command::Release { slot: call }).await?).map(|_| ()) })
    }

    fn usage(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self.consensus.local(|s| s.pool.usage().map(|(t, n)| (t.to_string(), n)).collect());
        v.sort();
        v
    }
}

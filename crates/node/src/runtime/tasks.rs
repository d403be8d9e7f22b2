//! The node's background tasks besides the engine: stopping the node when its Raft core stops, the
//! cluster's shared secret, reconciling an earlier run's slots, and tidying escrow shares.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hatrunk_consensus::raft::Consensus;

use crate::admission::EscrowAdmission;

/// `shutdown`, or the moment the Raft core stops on a fatal error (a log write that failed because
/// the disk is full, say), reported on `fatal`. A node whose Raft stopped could neither commit nor
/// learn commits, so it must not go on taking calls as if it were a member.
pub(super) async fn stop_on_fatal(
    consensus: Arc<Consensus>,
    shutdown: impl Future<Output = ()>,
    fatal: tokio::sync::oneshot::Sender<String>,
) {
    let mut m = consensus.raft.metrics();
    let watch = async {
        loop {
            if let Err(e) = &m.borrow().running_state {
                return e.to_string();
            }
            if m.changed().await.is_err() {
                return "the Raft core exited".to_string();
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        why = watch => {
            tracing::error!(error = %why, "raft stopped on a fatal error; stopping the node");
            let _ = fatal.send(why);
        }
    }
}

/// Make sure the cluster has its shared secret: the leader proposes a random one while none is
/// committed (the first committed stays, so two proposals race harmlessly).
pub(super) async fn ensure_cluster_secret(consensus: Arc<Consensus>) {
    loop {
        if consensus.local(|s| s.cluster_secret.is_some()) {
            return;
        }
        if consensus.is_leader() {
            let secret: String = (0..4).map(|_| format!("{:016x}", hatrunk_consensus::rt::next_u64())).collect();
            let cmd = hatrunk_consensus::Command::SetClusterSecret { secret: hatrunk_consensus::Secret(secret) };
            if let Err(e) = consensus.write(cmd).await {
                tracing::debug!(error = %e, "cluster secret: waiting for the cluster");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Release the slots of this node's previous runs as soon as the cluster can take the write.
pub(super) async fn reconcile(consensus: Arc<Consensus>, admission: Arc<EscrowAdmission>) {
    loop {
        if consensus.is_initialized().await {
            match admission.reconcile().await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "reconcile: waiting for the cluster"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

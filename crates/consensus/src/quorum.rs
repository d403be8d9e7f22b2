//! Check-quorum: a leader that has not heard a quorum answer for too long stops sending
//! AppendEntries, so the followers it still reaches (slowly, or one way) elect a leader that can
//! commit.
//!
//! openraft 0.9 has no check-quorum. A leader whose links are slower than the Raft RPC timeouts
//! never commits, yet its heartbeats still arrive and keep every follower from electing another
//! (simulation seed 162985742: nothing committed for the rest of the run). openraft ignores an
//! election triggered on a leader, and switching heartbeats off is not enough: the replication
//! streams keep retrying the entries nobody acknowledged, and each retry renews the followers'
//! leader lease. So the leader's own network goes mute ([`crate::network::Network::mute`]); the
//! new leader's first message then deposes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, ServerState};

use crate::types::TypeConfig;

/// What the watchdog does on one look at the leader's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// AppendEntries on (or back on).
    Lead,
    /// No quorum answer within the limit: AppendEntries off.
    Quiet,
}

/// Pure: `since_ack_ms` is openraft's `millis_since_quorum_ack` (None until a quorum first
/// answered this term), `leading_ms` how long this node has been leader, `quiet_ms` how long it has
/// been mute (0 when not). The silence counted is at most `leading_ms`, which restarts when it
/// speaks again, so a leader whose quorum returns hears it first.
///
/// A quiet leader lets followers elect; if none wins within `retry_ms` (a real minority, or a
/// cluster of one), it speaks again so a quorum that returns hears from it.
pub fn judge(since_ack_ms: Option<u64>, leading_ms: u64, quiet_ms: u64, limit_ms: u64, retry_ms: u64) -> Verdict {
    let silent = since_ack_ms.map_or(leading_ms, |s| s.min(leading_ms));
    if quiet_ms > 0 {
        return if quiet_ms >= retry_ms { Verdict::Lead } else { Verdict::Quiet };
    }
    if silent >= limit_ms {
        Verdict::Quiet
    } else {
        Verdict::Lead
    }
}

/// Watch `raft` every `tick_ms` until it shuts down, muting its network (`mute`) while the verdict
/// is [`Verdict::Quiet`]. `busy` is set while a leadership transfer has muted it on purpose; the
/// watchdog does not judge then.
pub fn spawn(raft: Raft<TypeConfig>, mute: Arc<AtomicBool>, busy: Arc<AtomicBool>, tick_ms: u64, limit_ms: u64, retry_ms: u64) {
    tokio::spawn(async move {
        let mut rx = raft.metrics();
        let (mut leading, mut quiet) = (0u64, 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(tick_ms)).await;
            let (state, since, running) = {
                let m = rx.borrow_and_update();
                (m.state, m.millis_since_quorum_ack, m.running_state.is_ok())
            };
            if !running {
                return;
            }
            let transferring = busy.load(Ordering::Acquire);
            if state != ServerState::Leader || transferring {
                // a transfer mutes on its own account and unmutes when it is over
                if quiet > 0 && !transferring {
                    tracing::info!("deposed after going quiet");
                    mute.store(false, Ordering::Release);
                }
                (leading, quiet) = (0, 0);
                continue;
            }
            leading += tick_ms;
            match judge(since, leading, quiet, limit_ms, retry_ms) {
                Verdict::Quiet if quiet == 0 => {
                    tracing::warn!(since_quorum_ack_ms = since, "leader has not heard a quorum; going quiet so the followers elect");
                    mute.store(true, Ordering::Release);
                    quiet = tick_ms;
                }
                Verdict::Quiet => quiet += tick_ms,
                Verdict::Lead if quiet > 0 => {
                    tracing::info!("no other leader was elected; speaking again");
                    mute.store(false, Ordering::Release);
                    (leading, quiet) = (0, 0);
                }
                Verdict::Lead => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_goes_quiet_only_after_the_limit_without_a_quorum() {
        assert_eq!(judge(Some(200), 10_000, 0, 3_200, 5_000), Verdict::Lead);
        assert_eq!(judge(Some(3_200), 10_000, 0, 3_200, 5_000), Verdict::Quiet);
        // never acknowledged this term: counted from when it became leader
        assert_eq!(judge(None, 1_000, 0, 3_200, 5_000), Verdict::Lead);
        assert_eq!(judge(None, 3_300, 0, 3_200, 5_000), Verdict::Quiet);
    }

    #[test]
    fn a_quiet_leader_that_nobody_replaced_speaks_again() {
        assert_eq!(judge(Some(4_000), 9_000, 100, 3_200, 5_000), Verdict::Quiet);
        assert_eq!(judge(Some(9_000), 9_000, 5_000, 3_200, 5_000), Verdict::Lead);
        // and gets a whole limit for its quorum to answer before going quiet again
        assert_eq!(judge(Some(9_100), 100, 0, 3_200, 5_000), Verdict::Lead);
        assert_eq!(judge(Some(12_300), 3_200, 0, 3_200, 5_000), Verdict::Quiet);
    }
}

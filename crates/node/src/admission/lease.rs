//! This node's side of its admission lease (`hatrunk_consensus::lease`): until when it may admit,
//! by its own monotonic clock, timed from when the renewal that granted it was *sent* (a renewal
//! that took long to commit buys less), ending `DRIFT_MARGIN_MS` early. Without a valid lease the
//! node admits nothing new: partitioned, removed, draining or frozen past its lease.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use hatrunk_consensus::lease::{DRIFT_MARGIN_MS, LEASE_MS, RENEW_EVERY_MS};

/// Every state [`LeaseClock::state`] names.
pub const STATES: [&str; 4] = ["live", "expired", "draining", "removed"];

/// Why a node may not admit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLease {
    /// No renewal committed recently enough (cut off from the majority, or not started yet).
    Expired,
    /// Draining before its removal.
    Draining,
    /// Removed from the cluster.
    Removed,
}

impl NoLease {
    pub fn hint(self) -> &'static str {
        match self {
            NoLease::Expired => "its admission lease could not be renewed (no majority reachable?)",
            NoLease::Draining => "it is draining before its removal",
            NoLease::Removed => "it was removed from the cluster",
        }
    }
}

#[derive(Debug, Default)]
pub struct LeaseClock {
    until_ms: AtomicU64,
    last_sent_ms: AtomicU64,
    /// 0 normal, 1 draining, 2 removed.
    standing: AtomicU8,
}

impl LeaseClock {
    /// Whether a new call may be admitted at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), NoLease> {
        match self.standing.load(Ordering::Acquire) {
            2 => Err(NoLease::Removed),
            1 => Err(NoLease::Draining),
            _ if now_ms < self.until_ms.load(Ordering::Acquire) => Ok(()),
            _ => Err(NoLease::Expired),
        }
    }

    /// Whether the periodic renewal is due.
    pub fn due(&self, now_ms: u64) -> bool {
        let last = self.last_sent_ms.load(Ordering::Acquire);
        last == 0 || now_ms.saturating_sub(last) >= RENEW_EVERY_MS
    }

    /// A renewal is being sent at `now_ms` (monotonic; never 0 in practice, the clock starts at 1).
    pub fn sending(&self, now_ms: u64) {
        self.last_sent_ms.store(now_ms.max(1), Ordering::Release);
    }

    /// The renewal sent at `sent_ms` committed.
    pub fn granted(&self, sent_ms: u64, draining: bool) {
        self.until_ms.fetch_max(sent_ms + LEASE_MS - DRIFT_MARGIN_MS, Ordering::AcqRel);
        let _ = self.standing.compare_exchange(u8::from(!draining), u8::from(draining), Ordering::AcqRel, Ordering::Acquire);
    }

    /// The ledger says this node is no longer a member.
    pub fn removed(&self) -> bool {
        self.standing.swap(2, Ordering::AcqRel) != 2
    }

    /// The ledger said it was added back; true when it had been removed.
    pub fn rejoined(&self) -> bool {
        self.standing.compare_exchange(2, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The lease's state at `now_ms`, as `hatrunk_admission_lease` names it.
    pub fn state(&self, now_ms: u64) -> &'static str {
        match self.check(now_ms) {
            Ok(()) => "live",
            Err(NoLease::Expired) => "expired",
            Err(NoLease::Draining) => "draining",
            Err(NoLease::Removed) => "removed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_when_its_renewal_was_sent_and_ends_early() {
        let l = LeaseClock::default();
        assert_eq!(l.check(1), Err(NoLease::Expired), "none yet");
        assert!(l.due(1));
        l.sending(1000);
        assert!(!l.due(1000 + RENEW_EVERY_MS - 1));
        assert!(l.due(1000 + RENEW_EVERY_MS));
        l.granted(1000, false);
        assert_eq!(l.check(1000 + LEASE_MS - DRIFT_MARGIN_MS - 1), Ok(()));
        assert_eq!(l.check(1000 + LEASE_MS - DRIFT_MARGIN_MS), Err(NoLease::Expired));
        l.granted(900, false);
        assert_eq!(l.check(1000 + LEASE_MS - DRIFT_MARGIN_MS - 1), Ok(()), "an older renewal never shortens it");
        l.granted(1100, true);
        assert_eq!(l.check(1200), Err(NoLease::Draining));
        l.granted(1200, false);
        assert_eq!(l.check(1200), Ok(()), "drain cancelled");
        assert!(l.removed());
        assert!(!l.removed(), "reported once");
        assert_eq!(l.check(1200), Err(NoLease::Removed));
        l.granted(1300, false);
        assert_eq!(l.check(1300), Err(NoLease::Removed), "only a rejoin lifts it");
        l.rejoined();
        assert_eq!(l.check(1300), Ok(()));
    }
}

//! Slots a restarted node keeps for its previous lives' calls. A node's calls outlive its process:
//! the carrier and the PBX still have their dialog, and only their BYE ends it. So a restarted node
//! does not give its ledger share back; it keeps it, unusable for new calls, and lets a slot go when
//! a BYE of one of those calls passes through it (its Record-Route names the earlier boot and the
//! trunk), or when the trunk's `max_call_duration_s` has passed since the restart, the longest any of
//! them may still be up.
//!
//! The ledger decides whether a BYE counts (`Command::EndInherited`, once per Call-ID whatever the
//! restarts in between); this side queues the ends it saw and lowers its count only for those the
//! ledger counted. Pure: the caller passes the clock, a monotonic one (a stepped wall clock must not
//! free slots early).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Inherited {
    trunks: BTreeMap<String, Held>,
    /// Ends seen and not yet sent to the ledger: (trunk, Call-ID).
    pending: Vec<(String, String)>,
}

#[derive(Debug)]
struct Held {
    count: u32,
    until_ms: u64,
    /// Call-IDs whose end was already queued (both sides may hang up at once).
    seen: BTreeSet<String>,
}

impl Inherited {
    /// What the ledger said this node held at start, per trunk, with when each trunk's hold ends.
    pub fn take_over(&mut self, shares: Vec<(String, u32)>, until_ms: impl Fn(&str) -> u64) {
        for (trunk, count) in shares.into_iter().filter(|(_, n)| *n > 0) {
            let until_ms = until_ms(&trunk);
            self.trunks.insert(trunk, Held { count, until_ms, seen: BTreeSet::new() });
        }
    }

    /// Slots of `trunk` still kept for earlier calls.
    pub fn count(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map(|h| h.count).unwrap_or(0)
    }

    /// Slots kept per trunk.
    pub fn counts(&self) -> Vec<(String, u32)> {
        self.trunks.iter().map(|(t, h)| (t.clone(), h.count)).collect()
    }

    /// A call of an earlier life ended (its BYE came through): queued for the ledger once per
    /// Call-ID. Returns whether it was queued. At most twice as many Call-IDs as slots held are
    /// remembered, so forged BYEs cannot grow memory.
    pub fn ended(&mut self, trunk: &str, call_id: &str) -> bool {
        let Some(h) = self.trunks.get_mut(trunk) else { return false };
        if h.seen.len() as u64 >= 2 * u64::from(h.count) + 16 || !h.seen.insert(call_id.to_string()) {
            return false;
        }
        self.pending.push((trunk.to_string(), call_id.to_string()));
        true
    }

    /// The ends to send to the ledger now.
    pub fn take_pending(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.pending)
    }

    /// An end whose ledger write went unanswered: sent again on the next round.
    pub fn retry(&mut self, trunk: String, call_id: String) {
        self.pending.push((trunk, call_id));
    }

    /// The ledger counted an end: one slot fewer kept.
    pub fn gave_back(&mut self, trunk: &str) {
        if let Some(h) = self.trunks.get_mut(trunk) {
            h.count = h.count.saturating_sub(1);
            if h.count == 0 {
                self.trunks.remove(trunk);
            }
        }
    }

    /// Forget holds whose calls cannot be up any more. Returns whether any went.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let before = self.trunks.len();
        self.trunks.retain(|_, h| now_ms < h.until_ms);
        self.trunks.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_queued_once_per_call_and_counts_when_the_ledger_says_so() {
        let mut i = Inherited::default();
        i.take_over(vec![("a".into(), 2), ("b".into(), 0)], |_| 1000);
        assert_eq!((i.count("a"), i.count("b")), (2, 0));
        assert!(i.ended("a", "c1"));
        assert!(!i.ended("a", "c1"), "the other side's BYE of the same call");
        assert!(!i.ended("b", "c9"), "nothing held");
        assert_eq!(i.take_pending(), vec![("a".to_string(), "c1".to_string())]);
        assert_eq!(i.count("a"), 2, "not before the ledger counted it");
        i.gave_back("a");
        assert_eq!(i.count("a"), 1);
        assert!(i.take_pending().is_empty());
        i.retry("a".into(), "c2".into());
        assert_eq!(i.take_pending().len(), 1);
        assert!(!i.expire(999));
        assert!(i.expire(1000));
        assert_eq!(i.count("a"), 0);
        assert!(!i.ended("a", "c3"));
    }

    #[test]
    fn forged_ends_cannot_grow_memory() {
        let mut i = Inherited::default();
        i.take_over(vec![("a".into(), 1)], |_| 1000);
        let queued = (0..1000).filter(|n| i.ended("a", &format!("forged-{n}"))).count();
        assert_eq!(queued, 18);
    }
}

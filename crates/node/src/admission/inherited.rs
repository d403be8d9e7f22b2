//! Slots a restarted node keeps for its previous life's calls. A node's calls outlive its process:
//! the carrier and the PBX still have their dialog, and only their BYE ends it. So a restarted node
//! does not give its ledger share back; it keeps it, unusable for new calls, and lets a slot go when
//! a BYE of one of those calls passes through it (its Record-Route names the earlier boot and the
//! trunk), or when the trunk's `max_call_duration_s` has passed since the restart, the longest any of
//! them may still be up. Pure: the caller passes the clock.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Inherited {
    trunks: BTreeMap<String, Held>,
}

#[derive(Debug)]
struct Held {
    count: u32,
    until_ms: u64,
    /// Call-IDs whose BYE already counted (both sides may hang up at once).
    ended: BTreeSet<String>,
}

impl Inherited {
    /// What the ledger said this node held at start, per trunk, with when each trunk's hold ends.
    pub fn take_over(&mut self, shares: Vec<(String, u32)>, until_ms: impl Fn(&str) -> u64) {
        for (trunk, count) in shares.into_iter().filter(|(_, n)| *n > 0) {
            let until_ms = until_ms(&trunk);
            self.trunks.insert(trunk, Held { count, until_ms, ended: BTreeSet::new() });
        }
    }

    /// Slots of `trunk` still kept for earlier calls.
    pub fn count(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map(|h| h.count).unwrap_or(0)
    }

    /// A call of an earlier life ended (its BYE came through): one slot fewer to keep, once per
    /// Call-ID. Returns whether it counted.
    pub fn ended(&mut self, trunk: &str, call_id: &str) -> bool {
        let Some(h) = self.trunks.get_mut(trunk) else { return false };
        if h.count == 0 || !h.ended.insert(call_id.to_string()) {
            return false;
        }
        h.count -= 1;
        if h.count == 0 {
            self.trunks.remove(trunk);
        }
        true
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
    fn a_bye_counts_once_per_call_and_the_hold_ends_at_the_longest_call() {
        let mut i = Inherited::default();
        i.take_over(vec![("a".into(), 2), ("b".into(), 0)], |_| 1000);
        assert_eq!((i.count("a"), i.count("b")), (2, 0));
        assert!(i.ended("a", "c1"));
        assert!(!i.ended("a", "c1"), "the other side's BYE of the same call");
        assert!(!i.ended("b", "c9"), "nothing held");
        assert_eq!(i.count("a"), 1);
        assert!(!i.expire(999));
        assert!(i.expire(1000));
        assert_eq!(i.count("a"), 0);
        assert!(!i.ended("a", "c2"));
    }
}

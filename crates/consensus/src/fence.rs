//! What keeps old writes from undoing newer ones: each trunk's revision (compare-and-swap for
//! configuration, as etcd's `mod_revision`), each node's boot epoch (a share change from an earlier
//! process of a node is refused once a later one has booted), and the calls of earlier lives whose
//! end already gave their inherited slot back (so a BYE retransmitted across a restart counts once).
//! Pure and deterministic: part of the replicated state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Write whatever is there (`--force`).
    Any,
    /// The trunk must not exist.
    Absent,
    /// The trunk must be at this revision.
    At(u64),
}

impl Expect {
    /// From the revision a writer read: 0 means "did not exist".
    pub fn read_at(revision: u64) -> Expect {
        if revision == 0 {
            Expect::Absent
        } else {
            Expect::At(revision)
        }
    }

    fn holds(self, current: u64) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current == 0,
            Expect::At(r) => current == r,
        }
    }
}

/// Ended calls remembered per node: enough for every call a node can have up at once on any
/// realistic trunk; an older BYE retransmission than this could count twice (docs/consensus.md).
pub const ENDED_KEPT: usize = 65_536;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fences {
    /// The last revision handed out; every trunk write takes the next one.
    seq: u64,
    /// trunk id -> the revision of its current version (absent: the trunk does not exist).
    revisions: BTreeMap<String, u64>,
    /// node -> its current boot epoch.
    epochs: BTreeMap<String, u64>,
    /// node -> calls of its earlier lives whose slot already went back, oldest first.
    ended: BTreeMap<String, Ended>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ended {
    set: BTreeSet<String>,
    order: VecDeque<String>,
}

impl Fences {
    /// Fences for a state written before they existed: every trunk at its own first revision.
    pub fn from_trunks<'a>(ids: impl Iterator<Item = &'a String>) -> Fences {
        let mut f = Fences::default();
        for id in ids {
            f.bump(id);
        }
        f
    }

    /// The trunk's current revision, 0 when it does not exist.
    pub fn revision(&self, trunk: &str) -> u64 {
        self.revisions.get(trunk).copied().unwrap_or(0)
    }

    /// Whether a write expecting `expect` may change `trunk` now.
    pub fn allows(&self, trunk: &str, expect: Expect) -> bool {
        expect.holds(self.revision(trunk))
    }

    /// `trunk` was written: it takes the next revision, which is returned.
    pub fn bump(&mut self, trunk: &str) -> u64 {
        self.seq += 1;
        self.revisions.insert(trunk.to_string(), self.seq);
        self.seq
    }

    /// `trunk` was deleted. The sequence keeps going, so a re-created trunk never takes a
    /// revision a writer may have read from the deleted one.
    pub fn deleted(&mut self, trunk: &str) {
        self.seq += 1;
        self.revisions.remove(trunk);
    }

    /// `node` (re)started: its next epoch.
    pub fn boot(&mut self, node: &str) -> u64 {
        let e = self.epochs.entry(node.to_string()).or_default();
        *e += 1;
        *e
    }

    pub fn epoch(&self, node: &str) -> u64 {
        self.epochs.get(node).copied().unwrap_or(0)
    }

    /// Whether a share change of `node` sent by its process of `epoch` may apply.
    pub fn current(&self, node: &str, epoch: u64) -> bool {
        epoch >= self.epoch(node)
    }

    /// A call of an earlier life of `node` ended. True the first time for that call.
    pub fn end_call(&mut self, node: &str, call: &str) -> bool {
        let e = self.ended.entry(node.to_string()).or_default();
        if !e.set.insert(call.to_string()) {
            return false;
        }
        e.order.push_back(call.to_string());
        while e.order.len() > ENDED_KEPT {
            if let Some(old) = e.order.pop_front() {
                e.set.remove(&old);
            }
        }
        true
    }

    /// `node` left the cluster: its epoch stays (a delayed write of it stays refused), its ended
    /// calls go with its shares.
    pub fn removed(&mut self, node: &str) {
        self.ended.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_applies_only_at_the_revision_it_read() {
        let mut f = Fences::default();
        assert!(f.allows("a", Expect::Absent));
        let r1 = f.bump("a");
        assert!(!f.allows("a", Expect::Absent), "created meanwhile");
        assert!(f.allows("a", Expect::At(r1)));
        let r2 = f.bump("a");
        assert!(r2 > r1);
        assert!(!f.allows("a", Expect::At(r1)), "a delayed write read the older version");
        assert!(f.allows("a", Expect::Any));
        f.deleted("a");
        assert_eq!(f.revision("a"), 0);
        let r3 = f.bump("a");
        assert!(r3 > r2 + 1, "a re-created trunk never reuses a revision");
        assert_eq!(Expect::read_at(0), Expect::Absent);
        assert_eq!(Expect::read_at(7), Expect::At(7));
    }

    #[test]
    fn a_later_boot_fences_the_earlier_process() {
        let mut f = Fences::default();
        assert!(f.current("n1", 0), "writes from before epochs existed apply until the node boots");
        assert_eq!(f.boot("n1"), 1);
        assert_eq!(f.boot("n1"), 2);
        assert!(!f.current("n1", 1));
        assert!(f.current("n1", 2));
        f.removed("n1");
        assert!(!f.current("n1", 1), "removal keeps the fence");
    }

    #[test]
    fn a_call_ends_once_and_memory_stays_bounded() {
        let mut f = Fences::default();
        assert!(f.end_call("n1", "c1"));
        assert!(!f.end_call("n1", "c1"));
        assert!(f.end_call("n2", "c1"), "per node");
        for i in 0..ENDED_KEPT + 10 {
            f.end_call("n3", &format!("x{i}"));
        }
        let e = &f.ended["n3"];
        assert_eq!((e.set.len(), e.order.len()), (ENDED_KEPT, ENDED_KEPT));
        assert!(f.end_call("n3", "x0"), "the oldest was forgotten");
    }
}

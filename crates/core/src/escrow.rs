//! Escrow shares of a trunk's pool: how a node admits calls without a consensus round trip each.
//!
//! The replicated [`Shares`] ledger grants each node a share of every trunk's limit and never lets
//! the shares (plus any per-call slots) add up to more than the limit. A node's [`Escrow`] admits a
//! call locally while its calls in progress are below what it was granted, asks for more (one Raft
//! write for a batch) when they are not, and gives back what it does not need. So property 1 holds
//! by construction: calls in progress on a node <= what it may use <= its replicated share, and the
//! shares sum to at most the limit.
//!
//! Shares move only by rules that cannot over-admit: a node lowers what it may use *before* it
//! asks the ledger to shrink its share to that, one ledger write per node at a time. The share of a
//! node that is gone comes back only when it is removed; a node that restarts keeps its share
//! (`Command::Inherit`) for its earlier run's calls, which are still up at the carrier and the PBX,
//! and gives it back slot by slot as their BYEs pass (the node's `admission/inherited.rs`).
//! When a node is refused a share because others hold it all, the ledger marks the trunk starved;
//! every other node then gives back its unused reserve, and the refused node takes it (how its
//! calls wait meanwhile: the node's `admission/starved.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The replicated ledger: trunk -> node -> share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shares {
    granted: BTreeMap<String, BTreeMap<String, u32>>,
    /// Nodes that asked for more of a trunk than was free, until they get what they ask for.
    starved: BTreeMap<String, BTreeSet<String>>,
}

impl Shares {
    /// Grant `node` up to `want` more of `trunk`, within `room` (the limit minus per-call slots)
    /// less every share already granted. Returns what was granted. Asking for 0 only clears the
    /// starved mark.
    pub fn reserve(&mut self, trunk: &str, node: &str, want: u32, room: u32) -> u32 {
        let g = want.min(room.saturating_sub(self.total(trunk)));
        if g > 0 {
            *self.granted.entry(trunk.to_string()).or_default().entry(node.to_string()).or_default() += g;
        }
        if g < want {
            self.starved.entry(trunk.to_string()).or_default().insert(node.to_string());
        } else if let Some(s) = self.starved.get_mut(trunk) {
            s.remove(node);
            if s.is_empty() {
                self.starved.remove(trunk);
            }
        }
        g
    }

    /// `node` keeps at most `to` of its share of `trunk`. Idempotent, so a retry after an
    /// unanswered write is harmless; a node sends it only when no other write of its own for this
    /// trunk is in flight, so it never undoes a grant the node has not heard of.
    pub fn shrink(&mut self, trunk: &str, node: &str, to: u32) {
        if let Some(per) = self.granted.get_mut(trunk) {
            if let Some(s) = per.get_mut(node) {
                *s = (*s).min(to);
                if *s == 0 {
                    per.remove(node);
                }
            }
            if per.is_empty() {
                self.granted.remove(trunk);
            }
        }
    }

    /// A restarted `node` takes over what its previous life held: the shares stay (the calls set
    /// up through it outlive its process: carrier and PBX still have their dialog), its starved
    /// marks go. Returns its share per trunk.
    pub fn inherit(&mut self, node: &str) -> Vec<(String, u32)> {
        self.starved.retain(|_, s| {
            s.remove(node);
            !s.is_empty()
        });
        self.granted.iter().filter_map(|(t, per)| per.get(node).map(|n| (t.clone(), *n))).collect()
    }

    /// Everything `node` holds goes back (it was removed from the cluster).
    pub fn release_node(&mut self, node: &str) {
        self.granted.retain(|_, per| {
            per.remove(node);
            !per.is_empty()
        });
        self.starved.retain(|_, s| {
            s.remove(node);
            !s.is_empty()
        });
    }

    /// Drop every share of a trunk. Only the legacy `DeleteTrunk` command does (replicas that
    /// applied it before must keep computing the same state); a delete now keeps the shares, since
    /// the calls they cover are still up.
    pub fn forget_trunk(&mut self, trunk: &str) {
        self.granted.remove(trunk);
        self.starved.remove(trunk);
    }

    /// The sum of all nodes' shares of `trunk`.
    pub fn total(&self, trunk: &str) -> u32 {
        self.granted.get(trunk).map(|per| per.values().sum()).unwrap_or(0)
    }

    pub fn share(&self, trunk: &str, node: &str) -> u32 {
        self.granted.get(trunk).and_then(|per| per.get(node)).copied().unwrap_or(0)
    }

    /// Whether a node other than `me` is waiting for a share of `trunk`.
    pub fn starved_by_other(&self, trunk: &str, me: &str) -> bool {
        self.starved.get(trunk).is_some_and(|s| s.iter().any(|n| n != me))
    }

    pub fn is_starved(&self, trunk: &str, node: &str) -> bool {
        self.starved.get(trunk).is_some_and(|s| s.contains(node))
    }

    /// Whether a node other than `me` waits for a share of any trunk.
    pub fn any_starved_but(&self, me: &str) -> bool {
        self.starved.values().any(|s| s.iter().any(|n| n != me))
    }

    /// Trunks `node` is marked starved on.
    pub fn starved_of(&self, node: &str) -> Vec<String> {
        self.starved.iter().filter(|(_, s)| s.contains(node)).map(|(t, _)| t.clone()).collect()
    }

    /// Trunks `node` holds a share of.
    pub fn trunks_of(&self, node: &str) -> Vec<String> {
        self.granted.iter().filter(|(_, per)| per.contains_key(node)).map(|(t, _)| t.clone()).collect()
    }

    /// Each node's share of `trunk`.
    pub fn of_trunk<'a>(&'a self, trunk: &str) -> impl Iterator<Item = (&'a str, u32)> + 'a {
        self.granted.get(trunk).into_iter().flat_map(|per| per.iter().map(|(n, s)| (n.as_str(), *s)))
    }

    /// How many nodes share `trunk`, as `me` sizes its reserve ceiling: the others holding a share,
    /// and `me` whether it holds one yet or not (it is asking).
    pub fn sharers_with(&self, trunk: &str, me: &str) -> u32 {
        let others = self.of_trunk(trunk).filter(|(n, v)| *v > 0 && *n != me).count();
        u32::try_from(others).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// Shares per trunk, summed over nodes.
    pub fn totals(&self) -> impl Iterator<Item = (&str, u32)> {
        self.granted.iter().map(|(t, per)| (t.as_str(), per.values().sum()))
    }
}

/// How many slots a node asks for at once, and keeps in reserve while calls keep coming: a
/// sixteenth of the limit, at least 1 (small trunks stay exact call by call), at most 64.
pub fn batch(limit: u32) -> u32 {
    (limit / 16).clamp(1, 64)
}

/// The most reserve one of `sharers` nodes keeps of a trunk of `limit` for its rate (at least a
/// batch): together they keep at most half the pool as reserve (beyond the batch floor, which
/// binds only with more than eight nodes sharing a trunk), so the rest stays free for the calls
/// themselves wherever they arrive.
pub fn reserve_ceiling(limit: u32, sharers: u32) -> u32 {
    (limit / sharers.max(1).saturating_mul(2)).max(batch(limit))
}

/// The local answer to "may this call have a slot?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted from this node's share.
    Taken,
    /// This call already holds a slot (a retried admission).
    Held,
    /// The share is used up: ask the ledger for `want` more, then try again.
    Need { want: u32 },
    /// The share has room but the node reported less at its last lease renewal: renew, then try
    /// again.
    Capped,
}

#[derive(Debug, Clone, Default)]
struct Local {
    /// What this node may use: granted to it, minus what it decided to give back.
    usable: u32,
    in_use: u32,
    last_take_ms: u64,
    /// Under a lease: the most calls in progress the last committed renewal allows.
    cap: u32,
    /// A renewal in flight reported this; until it commits the lower of both applies.
    proposed: Option<u32>,
    /// Admissions since the last renewal was proposed (the next headroom follows the rate).
    taken: u32,
    /// The rate's headroom the last renewal proposed (about 3 s of calls): the reserve a busy
    /// node keeps and asks for, so a region loss (calls held longer while their forwards time
    /// out, a second slot each as they move) does not dry its share while a leader is elected.
    room: u32,
    /// Admissions of this trunk being decided here now (waiting for a renewal, the ledger or
    /// room): the demand a renewal and a request to the ledger cover, and the spare a starved
    /// node is not given. Without it a burst on a quiet trunk was let through one call per
    /// renewal and one per ledger write, and both nodes of a burst handed their spare to each
    /// other: calls were refused below the limit (`e2e_cluster::one_limit_across_two_nodes`
    /// answered 12 to 19 of 20 on a loaded machine).
    asking: u32,
}

impl Local {
    fn cap(&self) -> u32 {
        self.proposed.map_or(self.cap, |p| p.min(self.cap))
    }

    /// What this node may use and no call here uses.
    fn spare(&self) -> u32 {
        self.usable.saturating_sub(self.in_use)
    }

    /// The spare no admission being decided here waits for: what a starved node may be given.
    fn spare_for_others(&self) -> u32 {
        self.spare().saturating_sub(self.asking)
    }
}

/// One node's side: calls in progress per trunk against what it may use.
#[derive(Debug, Default)]
pub struct Escrow {
    /// Keyed by shared names: each holder below points at its trunk's name instead of a copy.
    trunks: HashMap<Arc<str>, Local>,
    holders: HashMap<String, Arc<str>>,
    /// Admissions are capped by what lease renewals reported (`hatrunk_consensus::lease`).
    leased: bool,
}

impl Escrow {
    /// An escrow whose admissions stay within what its lease renewals reported: a trunk's calls
    /// in progress never exceed the `keep` of the last committed renewal, so the ledger may cut the
    /// node's share to that once its lease lapsed.
    pub fn leased() -> Escrow {
        Escrow { leased: true, ..Escrow::default() }
    }

    /// Admit `call` on `trunk` from the local share. `over_limit`: the ledger holds more than the
    /// trunk's limit (it was lowered), so no reserve may be used until shares come back under it.
    pub fn take(&mut self, trunk: &str, call: &str, limit: u32, over_limit: bool, now_ms: u64) -> Take {
        if self.holders.contains_key(call) {
            return Take::Held;
        }
        let room = self.has_room(trunk, over_limit);
        let name = self.name(trunk);
        let leased = self.leased;
        let l = self.trunks.entry(name.clone()).or_default();
        l.last_take_ms = now_ms;
        if room {
            l.in_use += 1;
            l.taken = l.taken.saturating_add(1);
            self.holders.insert(call.to_string(), name);
            return Take::Taken;
        }
        if leased && !over_limit && l.in_use < l.usable {
            return Take::Capped;
        }
        Take::Need { want: batch(limit).max(l.room).max(l.asking) }
    }

    /// The shared name of `trunk` (created on first use).
    fn name(&self, trunk: &str) -> Arc<str> {
        self.trunks.get_key_value(trunk).map(|(k, _)| k.clone()).unwrap_or_else(|| trunk.into())
    }

    /// Whether a new call of `trunk` could be admitted from what this node may use now.
    pub fn has_room(&self, trunk: &str, over_limit: bool) -> bool {
        self.has_share(trunk, over_limit) && self.trunks.get(trunk).is_some_and(|l| !self.leased || l.in_use < l.cap())
    }

    /// Whether this node's share of `trunk` has a slot no call here uses, the lease's cap aside:
    /// a call that finds one renews its lease rather than asking the ledger or waiting for room
    /// (the cap is no shortage of the pool; taking it for one refused calls with a share unused).
    pub fn has_share(&self, trunk: &str, over_limit: bool) -> bool {
        !over_limit && self.trunks.get(trunk).is_some_and(|l| l.in_use < l.usable)
    }

    /// What to report in a lease renewal, per trunk: calls in progress plus a headroom of
    /// `headroom(trunk)`, six times the admissions since the last renewal (about 3 s of calls at
    /// the current rate: a leader election's worth, so admission rides one out) but no more than
    /// `ceiling(trunk)`, or the admissions being decided here (they wait for this renewal),
    /// whichever is most, or no headroom for a trunk
    /// without a new call in the last `idle_ms` (then a lost node strands exactly its calls in
    /// progress, and the next call here waits for one renewal).
    /// Until [`Escrow::renewed`] or [`Escrow::not_renewed`], admissions stay within both this
    /// and the last committed report.
    ///
    /// The rate's headroom is also the reserve the node keeps and asks for ([`Escrow::surplus`],
    /// [`Escrow::shortfall`]). `ceiling` keeps the reserves of all nodes within the pool (see
    /// [`reserve_ceiling`]): short calls at a high rate made each node's three seconds of calls
    /// larger than the whole limit, the ledger held all of it as reserves while an eighth was in
    /// use, and the nodes refused calls while they passed the pool between them.
    pub fn propose(
        &mut self,
        now_ms: u64,
        idle_ms: u64,
        headroom: impl Fn(&str) -> u32,
        ceiling: impl Fn(&str) -> u32,
    ) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .trunks
            .iter_mut()
            .filter(|(_, l)| l.usable > 0 || l.in_use > 0 || l.cap > 0 || l.asking > 0)
            .map(|(t, l)| {
                // a call waiting here makes the trunk busy however long it has waited
                let busy = now_ms.saturating_sub(l.last_take_ms) < idle_ms || l.asking > 0;
                let rate = l.taken.saturating_mul(6).min(ceiling(t));
                let room = headroom(t).max(rate).max(l.asking);
                // a rate token lasts a second: three seconds of them kept would hoard the rate
                l.room = if crate::cps::rate_trunk(t).is_some() { 0 } else { rate };
                l.taken = 0;
                let cap = l.in_use + if busy { room } else { 0 };
                l.proposed = Some(cap);
                (t.to_string(), cap)
            })
            .collect();
        out.sort();
        out
    }

    /// The renewal committed: what it reported is the cap now.
    pub fn renewed(&mut self) {
        for l in self.trunks.values_mut() {
            if let Some(p) = l.proposed.take() {
                l.cap = p;
            }
        }
    }

    /// The renewal's fate is unknown: it may have committed, so the lower of both stays the cap.
    pub fn not_renewed(&mut self) {
        for l in self.trunks.values_mut() {
            l.cap = l.cap();
            l.proposed = None;
        }
    }

    /// A renewal went unanswered. If it committed, it may have been the one that found the lease
    /// lapsed: the ledger then cut this node's shares to its last report before it (`Lapse`), and
    /// the next renewal, finding the lease live, says nothing of it. So what this node may use
    /// drops to what that report covered: the cap, which admissions were held to anyway (a rate
    /// pool to nothing, as a lapse leaves it; by then its last token is back).
    pub fn cut_to_cap(&mut self) {
        for (t, l) in self.trunks.iter_mut() {
            let keep = if crate::cps::rate_trunk(t).is_some() { 0 } else { l.cap() };
            l.usable = l.usable.min(keep);
        }
    }

    /// The lease had lapsed and the ledger cut this node's share of `trunk` to `share`, of which
    /// `kept` are slots of earlier runs' calls: what this node may use shrinks to the rest.
    pub fn cut(&mut self, trunk: &str, share: u32, kept: u32) {
        if let Some(l) = self.trunks.get_mut(trunk) {
            l.usable = l.usable.min(share.saturating_sub(kept));
        }
    }

    /// The cap a trunk's admissions are under now (tests and status).
    pub fn cap(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map(|l| l.cap()).unwrap_or(0)
    }

    /// The ledger granted `granted` more of `trunk`.
    pub fn credit(&mut self, trunk: &str, granted: u32) {
        let name = self.name(trunk);
        self.trunks.entry(name).or_default().usable += granted;
    }

    /// `call` ended: its slot is free again here. Returns false when it held none.
    pub fn release(&mut self, call: &str) -> bool {
        let Some(trunk) = self.holders.remove(call) else {
            return false;
        };
        if let Some(l) = self.trunks.get_mut(&trunk) {
            l.in_use = l.in_use.saturating_sub(1);
        }
        true
    }

    /// What to give back of `trunk` now, already taken off what this node may use (the ledger is
    /// told afterwards with a shrink to [`Escrow::usable`], so the node never uses a slot the
    /// ledger may have handed to someone else).
    /// Keeps a batch in reserve, or the rate's headroom or what calls waiting here want when
    /// larger, while calls came in the last `idle_ms` or wait now; nothing after that or when the
    /// trunk is over its limit, only what waiting calls want when another node is starved.
    /// Hysteresis of one batch avoids giving back and asking again on every call.
    pub fn surplus(&mut self, trunk: &str, limit: u32, others_starved: bool, over_limit: bool, now_ms: u64, idle_ms: u64) -> u32 {
        let Some(l) = self.trunks.get_mut(trunk) else {
            return 0;
        };
        let spare = l.spare();
        let busy = now_ms.saturating_sub(l.last_take_ms) < idle_ms || l.asking > 0;
        let b = batch(limit);
        // what calls waiting here were granted (a burst's request covers them) is theirs
        let keep = b.max(l.room).max(l.asking);
        let give = if over_limit || !busy {
            spare
        } else if others_starved {
            l.spare_for_others()
        } else if spare > keep + b {
            spare - keep
        } else {
            0
        };
        l.usable -= give;
        give
    }

    /// What a busy node asks for ahead of need: back up to its reserve (see [`Escrow::surplus`])
    /// once its spare fell under half of it, so the reserve is there when a leader is not.
    /// Nothing when idle, when another node is starved or the trunk is over its limit.
    pub fn shortfall(&self, trunk: &str, limit: u32, others_starved: bool, over_limit: bool, now_ms: u64, idle_ms: u64) -> u32 {
        let Some(l) = self.trunks.get(trunk) else {
            return 0;
        };
        let busy = now_ms.saturating_sub(l.last_take_ms) < idle_ms;
        if others_starved || over_limit || !busy {
            return 0;
        }
        let spare = l.spare();
        let keep = batch(limit).max(l.room);
        if spare * 2 < keep {
            keep - spare
        } else {
            0
        }
    }

    /// An admission of `trunk` that could not be decided at once starts being decided here.
    pub fn asking(&mut self, trunk: &str) {
        let name = self.name(trunk);
        let l = self.trunks.entry(name).or_default();
        l.asking = l.asking.saturating_add(1);
    }

    /// ... and is decided (admitted, refused or abandoned).
    pub fn asked(&mut self, trunk: &str) {
        if let Some(l) = self.trunks.get_mut(trunk) {
            l.asking = l.asking.saturating_sub(1);
        }
    }

    /// What a starved node could be given of `trunk` now: the spare no admission here waits for.
    pub fn spare_for_others(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map_or(0, Local::spare_for_others)
    }

    pub fn holds(&self, call: &str) -> bool {
        self.holders.contains_key(call)
    }

    pub fn in_use(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map(|l| l.in_use).unwrap_or(0)
    }

    pub fn usable(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map(|l| l.usable).unwrap_or(0)
    }

    /// Trunks this node holds anything of.
    pub fn trunks(&self) -> Vec<String> {
        let mut v: Vec<String> = self.trunks.iter().filter(|(_, l)| l.usable > 0 || l.in_use > 0).map(|(t, _)| t.to_string()).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
#[path = "escrow_tests.rs"]
mod tests;

//! What the engine's handlers produce, in one place: the [`Action`]s the driver carries out, the
//! timers they arm, and the one sequence that names calls, branches, tags and timers. One sequence,
//! drawn in the order handlers ask, is what makes a run replay exactly from its seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use bytes::Bytes;

use hatrunk_core::trunk::Role;
use hatrunk_sip::transaction::{Timer, TxKey};

use super::{Action, Src};

/// Timers of transactions and probes, found through `Output`'s `timer_keys` map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum TimerKey {
    Server(TxKey, Timer),
    Client(String, Timer),
    Probe(String, Role),
    /// Forwarded INVITEs wait for their trunk (`catch_up.rs`): one poll for all of them.
    CatchUp,
}

/// A timer of one call (by id), kept in its own heap without a map entry: an answered call keeps
/// two of them (Timer C, its maximum duration) for minutes, and 100,000 calls must stay small.
/// Attempts are numbered as in the call's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CallTimer {
    /// The per-attempt failover timer (no answer within `failover_timeout_ms`).
    Failover(u32),
    /// RFC 3261 Timer C: a proceeding INVITE attempt that never completes.
    TimerC(u32),
    /// A forwarded attempt's egress node has sent nothing yet.
    Forward(u32),
    /// An answered call reached the trunk's maximum duration.
    MaxDuration,
    /// A cancelled call's slot, held while a PBX may still answer its attempts, goes back anyway.
    HeldSlot,
    /// The second slot held for attempt `n`, given up on while its PBX may still answer, goes back.
    SecondSlot(u32),
    /// Attempt `n`'s address stayed silent for its share of the account's time: the next one.
    NextTarget(u32),
    /// The call's session timer (RFC 4028) may have run out.
    SessionExpired,
}

/// `(at, seq, call id, timer)`: ordered like the other heap's `(at, seq)`, so timers fire in the
/// order they were armed whichever heap holds them.
pub(super) type CallTimerEntry = (u64, u64, u64, CallTimer);

/// A timer that came due.
pub(super) enum Due {
    Keyed(TimerKey),
    Call(u64, CallTimer),
}

pub(super) struct Output {
    seed: u64,
    seq: u64,
    actions: Vec<Action>,
    /// Timers of transactions and probes: `(at, seq)`, the key found through `timer_keys`.
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    timer_keys: HashMap<u64, TimerKey>,
    /// Timers of calls, without a map entry: an answered call keeps two of them (Timer C, its
    /// maximum duration) for minutes, and 100,000 calls must stay small.
    call_timers: BinaryHeap<Reverse<CallTimerEntry>>,
}

impl Output {
    pub(super) fn new(seed: u64) -> Output {
        Output {
            seed,
            seq: seed,
            actions: Vec::new(),
            timers: BinaryHeap::new(),
            timer_keys: HashMap::new(),
            call_timers: BinaryHeap::new(),
        }
    }

    pub(super) fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    pub(super) fn send(&mut self, to: Src, bytes: Bytes) {
        self.actions.push(Action::Send { proto: to.proto, addr: to.addr, conn: to.conn, bytes });
    }

    pub(super) fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// A new call id.
    pub(super) fn next_id(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// A new Via branch (RFC 3261 magic cookie first).
    pub(super) fn branch(&mut self) -> String {
        let n = self.next_id();
        format!("z9hG4bK{:x}{:08x}", self.seed & 0xffff_ffff, n)
    }

    /// A new To tag.
    pub(super) fn tag(&mut self) -> String {
        let n = self.next_id();
        format!("ht{:x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16)
    }

    pub(super) fn arm(&mut self, at: u64, key: TimerKey) {
        let n = self.next_id();
        self.timers.push(Reverse((at, n)));
        self.timer_keys.insert(n, key);
    }

    pub(super) fn arm_call(&mut self, at: u64, call: u64, t: CallTimer) {
        let n = self.next_id();
        self.call_timers.push(Reverse((at, n, call, t)));
    }

    /// When the next timer is due, if any.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let a = self.timers.peek().map(|Reverse((at, _))| *at);
        let b = self.call_timers.peek().map(|Reverse((at, ..))| *at);
        a.into_iter().chain(b).min()
    }

    /// The next timer due at `now`, in the order timers were armed whichever heap holds them.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<Due> {
        loop {
            let keyed = self.timers.peek().map(|Reverse(e)| *e).filter(|(at, _)| *at <= now);
            let call = self.call_timers.peek().map(|Reverse(e)| *e).filter(|(at, ..)| *at <= now);
            match (keyed, call) {
                (None, None) => return None,
                (Some((at, n)), Some((c_at, c_n, ..))) if (at, n) < (c_at, c_n) => {
                    if let Some(d) = self.pop_keyed(n) {
                        return Some(d);
                    }
                }
                (Some((_, n)), None) => {
                    if let Some(d) = self.pop_keyed(n) {
                        return Some(d);
                    }
                }
                (_, Some((_, _, id, t))) => {
                    self.call_timers.pop();
                    return Some(Due::Call(id, t));
                }
            }
        }
    }

    fn pop_keyed(&mut self, n: u64) -> Option<Due> {
        self.timers.pop();
        self.timer_keys.remove(&n).map(Due::Keyed)
    }

    /// Give back the memory of a burst (see `Engine::shrink_tables`).
    pub(super) fn shrink(&mut self) {
        super::shrink_map(&mut self.timer_keys);
        if self.timers.capacity() > 4 * self.timers.len() + 1024 {
            self.timers.shrink_to(2 * self.timers.len());
        }
        if self.call_timers.capacity() > 4 * self.call_timers.len() + 1024 {
            self.call_timers.shrink_to(2 * self.call_timers.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_the_order_armed_across_both_heaps() {
        let mut o = Output::new(0);
        o.arm_call(10, 1, CallTimer::MaxDuration);
        o.arm(10, TimerKey::Client("b".into(), hatrunk_sip::transaction::Timer::E));
        o.arm_call(5, 2, CallTimer::HeldSlot);
        assert_eq!(o.next_deadline(), Some(5));
        let order: Vec<String> = std::iter::from_fn(|| o.pop_due(10))
            .map(|d| match d {
                Due::Call(id, _) => format!("call {id}"),
                Due::Keyed(_) => "keyed".into(),
            })
            .collect();
        assert_eq!(order, ["call 2", "call 1", "keyed"]);
        assert!(o.pop_due(u64::MAX).is_none());
    }

    #[test]
    fn one_sequence_names_everything() {
        let mut o = Output::new(0x10);
        assert_eq!(o.branch(), "z9hG4bK1000000011");
        assert_eq!(o.next_id(), 0x12);
        assert!(o.tag().starts_with("ht"));
        o.arm(1, TimerKey::Client("x".into(), hatrunk_sip::transaction::Timer::F));
        assert_eq!(o.next_id(), 0x15, "a timer takes a number too");
    }
}

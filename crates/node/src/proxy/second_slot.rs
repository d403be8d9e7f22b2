//! Second slots: an ingress that moves a call off an egress node which may have delivered it (the
//! node went quiet, or the detector says it is down, while our INVITE was with it) could have the
//! call up twice at the PBXes: the node's answer, lost on its way back, and the next node's. Each is
//! torn down once we hear of it, but until then both dialogs count against the trunk's limit
//! (property 1; simulation seed 970080, a one-way partition: 11 dialogs on a limit of 9 for 3.5 s).
//! So the call takes a second slot for the forward it leaves behind before it tries the next node,
//! and gives it back when that forward is certainly over: its final response, its late answer torn
//! down, or [`settle_by`]. No free slot: the call ends with 503 (the trunk is full, counting the
//! forward that may still be answered), and its own slot stays kept for that forward instead, as it
//! does when no node is left.
//!
//! Only moves between nodes take one. A local failover past a silent Primary does not: a Primary
//! that is down for good would otherwise cost every call in the failover window two slots for a
//! minute, and at the limit would stop failover altogether (property 4); its late answer is torn
//! down the moment it arrives (docs/decisions.md).

use std::collections::HashMap;

use hatrunk_core::cdr::{Cause, Disposition};
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;
use hatrunk_sip::transaction::TIMEOUT;

use super::calls::Calls;
use super::context::Cx;
use super::{build, Action, CallTimer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Asking,
    /// Over before admission answered: given back when it does.
    SettledAsking,
    Held,
    /// Given back; the entry stays until its timer so a repeated final changes nothing.
    Done,
}

struct Second {
    slot: SlotId,
    state: State,
    until: u64,
}

/// The second slots of one node's calls.
#[derive(Default)]
pub(super) struct SecondSlots {
    /// Admission tickets (in the `call` field of [`Action::Admit`]) -> (call, forwarded attempt).
    asking: HashMap<u64, (u64, usize)>,
    held: HashMap<(u64, usize), Second>,
}

impl SecondSlots {
    /// Attempt `n` of call `id` has (or had) a second slot of its own.
    pub(super) fn has(&self, id: u64, n: usize) -> bool {
        self.held.contains_key(&(id, n))
    }
}

/// Until when an attempt started at `started` and given up on at `now` may still be answered and
/// its dialog be up: its transaction matches a late answer until Timer B, and a PBX whose answer
/// we never heard retransmits it, unacknowledged, for another 64 x T1 before it gives up.
pub(super) fn settle_by(started: u64, now: u64) -> u64 {
    (started + 2 * TIMEOUT).max(now + TIMEOUT)
}

impl Calls {
    /// Try the next egress node past forwarded attempt `n` of call `id`: at once if that attempt is
    /// over, else once a second slot is granted for it.
    pub(super) fn go_on(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        let Some(call) = self.get(id) else {
            return;
        };
        let Some(a) = call.attempts.get(n).filter(|a| a.unsettled) else {
            return self.next_egress_or_fail(cx, id);
        };
        let (slot, until) = (call.slot.second(n), settle_by(a.started, cx.now));
        let (trunk, limit) = (call.trunk.id.clone(), call.trunk.max_concurrent_calls);
        let ticket = cx.io.next_id();
        self.second.asking.insert(ticket, (id, n));
        self.second.held.insert((id, n), Second { slot: slot.clone(), state: State::Asking, until });
        cx.io.push(Action::Admit { call: ticket, trunk, limit, slot, cps: None });
    }

    /// Admission answered `ticket`; false when it was not a second slot's.
    pub(super) fn second_admitted(&mut self, cx: &mut Cx<'_>, ticket: u64, decision: &Result<Decision, String>) -> bool {
        let Some((id, n)) = self.second.asking.remove(&ticket) else {
            return false;
        };
        let granted = matches!(decision, Ok(d) if d.admitted());
        let Some(s) = self.second.held.get_mut(&(id, n)) else {
            return true;
        };
        if !granted {
            if decision.is_err() {
                // the admit may still commit after we gave up on it
                cx.io.push(Action::Release { slot: s.slot.clone() });
            }
            self.second.held.remove(&(id, n));
            if self.get(id).is_some() {
                self.full_past_unsettled(cx, id);
            }
            return true;
        }
        if s.state == State::SettledAsking {
            cx.io.push(Action::Release { slot: s.slot.clone() });
            s.state = State::Done;
        } else {
            s.state = State::Held;
        }
        cx.io.arm_call(s.until, id, CallTimer::SecondSlot(n as u32));
        if self.get(id).is_some_and(|c| c.answer_ms.is_none() && c.key.is_some()) {
            self.next_egress_or_fail(cx, id);
        }
        true
    }

    /// No slot for the attempt left behind: the trunk is full. The call ends with 503, and its own
    /// slot stays kept for that attempt.
    fn full_past_unsettled(&mut self, cx: &mut Cx<'_>, id: u64) {
        let Some(call) = self.get(id) else {
            return;
        };
        tracing::info!(call = id, trunk = %call.trunk.id, "no slot free for an attempt that may still be answered; the call is refused");
        let key = call.key();
        let tag = cx.io.tag();
        let Some(mut reply) = cx.tx.servers.get(&key).map(|e| build::response(&e.req, 503, Some(&tag))) else {
            return self.finish(cx, id, Disposition::Congestion, Cause::CallLimitExceeded, None, false);
        };
        reply.push("Retry-After", "5");
        reply.push("Reason", "Q.850;cause=34;text=\"No circuit/channel available\"");
        cx.respond_msg(&key, reply);
        self.finish(cx, id, Disposition::Congestion, Cause::CallLimitExceeded, Some(503), false);
    }

    /// Call `id` is ending: an attempt it gave up on without a second slot (a forward, or a local
    /// one past a silent PBX) may still be answered, so its slot is kept until that is over.
    pub(super) fn keep_for_unsettled(&mut self, cx: &mut Cx<'_>, id: u64) {
        let now = cx.now;
        let Some(call) = self.get(id) else {
            return;
        };
        let until = call
            .attempts
            .iter()
            .enumerate()
            .filter(|(n, a)| a.unsettled && !self.second.has(id, *n))
            .map(|(_, a)| settle_by(a.started, a.started + a.rec.elapsed_ms))
            .max();
        let Some(until) = until.filter(|u| *u > now) else {
            return;
        };
        if self.get_mut(id).is_some_and(|c| c.hold_slot()) {
            cx.io.arm_call(until, id, CallTimer::HeldSlot);
        }
    }

    /// Attempt `n` of call `id` is over (its final response, its late answer torn down): give back
    /// what was held for it.
    pub(super) fn settle_attempt(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        if let Some(a) = self.attempt_mut(id, n) {
            a.unsettled = false;
        }
        match self.second.held.get_mut(&(id, n)) {
            Some(s) if s.state == State::Held => {
                cx.io.push(Action::Release { slot: s.slot.clone() });
                s.state = State::Done;
            }
            Some(s) if s.state == State::Asking => s.state = State::SettledAsking,
            Some(_) => {}
            None => self.release_held(cx, id),
        }
    }

    /// [`settle_by`] passed for attempt `n`'s second slot.
    pub(super) fn second_expired(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        if let Some(s) = self.second.held.remove(&(id, n)) {
            if s.state == State::Held {
                cx.io.push(Action::Release { slot: s.slot });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_may_be_answered_until_timer_b_and_the_pbx_retransmissions_after_it() {
        assert_eq!(settle_by(1_000, 3_500), 1_000 + 2 * TIMEOUT);
        assert_eq!(settle_by(1_000, 100_000), 100_000 + TIMEOUT, "given up late: Timer C");
    }
}

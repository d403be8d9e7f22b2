//! The calls in progress, the state this node holds for each: the table by id, answered calls by
//! Call-ID (their dialogs), the slots and 487s still owed for calls that ended, and the turns of
//! round robin and Advanced HA per trunk. A call and its attempts change state through the engine's
//! handlers (`call.rs`, `call/attempt.rs`, `cancel.rs`, `egress.rs`, `dialog.rs`); what ending a
//! call means for its slot and its CDR is decided here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hatrunk_core::cdr::{AttemptRecord, Cause, Cdr, Direction, Disposition, EgressReport};
use hatrunk_core::plan::CallPlan;
use hatrunk_core::rr::RoundRobin;
use hatrunk_core::slot::SlotId;
use hatrunk_core::trunk::{Role, Trunk};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use super::Src;

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttemptState {
    /// Sent; nothing heard back.
    Sent,
    /// A response came (100 Trying at least): CANCEL may be sent, a forwarded attempt's node is alive.
    Trying,
    /// A provisional response other than 100 came: the failover timer no longer applies.
    Ringing,
    /// Answered, failed, given up on or cancelled: nothing it sends changes the call any more.
    Done,
}

impl AttemptState {
    pub(super) fn done(self) -> bool {
        self == AttemptState::Done
    }

    /// Something came back while it was live.
    pub(super) fn heard(self) -> bool {
        matches!(self, AttemptState::Trying | AttemptState::Ringing)
    }
}

/// Where a call's slot in the trunk's pool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Not asked for: refused, not yet asked, or an egress node delivering a forwarded call (the
    /// ingress holds the slot).
    None,
    /// Admission was asked and has not answered: a call that ends now releases it when it does.
    Asking,
    Held,
    /// Held past the call's end: cancelled while a PBX may still answer an attempt; released by
    /// `release_held` (cancel.rs).
    Kept,
}

pub(super) struct Attempt {
    pub(super) rec: AttemptRecord,
    pub(super) branch: String,
    pub(super) started: u64,
    pub(super) state: AttemptState,
    /// Forwarded to another node (Advanced HA) rather than sent to a PBX or the carrier.
    pub(super) forward: bool,
    /// The node a forwarded attempt went to.
    pub(super) egress_node: Option<u64>,
    /// A forwarded attempt's own attempts, as its egress node reported them.
    pub(super) sub: Vec<AttemptRecord>,
    /// A forward given up on before a final response: its node may have delivered it, and the PBX
    /// may still answer (`second_slot.rs`).
    pub(super) unsettled: bool,
}

impl Attempt {
    pub(super) fn new(rec: AttemptRecord, branch: String, started: u64, forward: bool) -> Attempt {
        Attempt { rec, branch, started, state: AttemptState::Sent, forward, egress_node: None, sub: Vec::new(), unsettled: false }
    }
}

/// One call in progress (until its final failure, or while answered until BYE).
pub struct Call {
    /// The INVITE's server transaction; none once answered (nothing answers the caller's INVITE
    /// again). Boxed: 8 bytes in an answered call, which lasts minutes, instead of the key's 128.
    pub(super) key: Option<Box<TxKey>>,
    pub(super) trunk: Arc<Trunk>,
    pub(super) direction: Direction,
    /// Outbound: the account the PBX came in on.
    pub(super) via_account: Option<Role>,
    /// The INVITE as received, until the call is answered (then only its Call-ID and From stay,
    /// below: an answered call lasts minutes and 100,000 of them must fit in little memory).
    pub(super) req: Option<Box<SipMessage>>,
    /// Shared with the dialog table's key.
    pub(super) call_id: Arc<str>,
    pub(super) from_uri: String,
    pub(super) src: Src,
    pub(super) number: String,
    pub(super) slot: SlotId,
    pub(super) plan: Option<CallPlan>,
    pub(super) attempts: Vec<Attempt>,
    pub(super) start_ms: u64,
    pub(super) answer_ms: Option<u64>,
    pub(super) failover_detect: Option<u64>,
    pub(super) failover_ms: Option<u64>,
    pub(super) slot_state: SlotState,
    /// Ingress: where the call may leave from (Advanced HA).
    pub(super) egress: Option<Box<EgressPlan>>,
    /// Egress: the ingress node that admitted and forwarded this call.
    pub(super) forwarded_from: Option<String>,
    /// Ingress: what the egress said about failover towards the PBX.
    pub(super) report: Option<Box<EgressReport>>,
    /// The account being tried has more addresses (its name resolved to several).
    pub(super) targets: Option<Box<AccountTargets>>,
    /// The answer set a session timer (RFC 4028): see `session.rs`.
    pub(super) session: Option<Box<super::session::Session>>,
}

/// Where one attempt goes.
#[derive(Debug, Clone)]
pub(super) struct Dest {
    pub(super) src: Src,
    pub(super) ruri: String,
    /// What its CDR names when that is not the Request-URI (a PBX given by name: the address the
    /// name resolved to; a flow held by another member: that member too).
    pub(super) shown: Option<String>,
    /// A registered PBX's flow (`flow.rs`).
    pub(super) flow: Option<super::flow::Hop>,
}

impl Dest {
    pub(super) fn to(src: Src, ruri: String) -> Dest {
        Dest { src, ruri, shown: None, flow: None }
    }
}

/// The addresses of the account a call is trying, in RFC 2782 order, still to try: a 503, a
/// connection error or silence on one moves to the next; `failover_timeout_ms` bounds them all.
pub(super) struct AccountTargets {
    pub(super) role: hatrunk_core::trunk::Role,
    pub(super) rest: std::collections::VecDeque<Dest>,
    /// When the account's first address was tried.
    pub(super) started: u64,
    /// How long one address may stay silent before the next is tried.
    pub(super) per_target_ms: u64,
}

impl Call {
    /// The INVITE's server transaction key (the empty key, which names none, once answered).
    pub(super) fn key(&self) -> TxKey {
        self.key.as_deref().cloned().unwrap_or_default()
    }

    /// Keep this call's slot after the call ends, if it holds one and attempts were started (a PBX
    /// may still answer them). Returns whether it does.
    pub(super) fn hold_slot(&mut self) -> bool {
        if self.slot_state == SlotState::Held && !self.attempts.is_empty() {
            self.slot_state = SlotState::Kept;
        }
        self.slot_state == SlotState::Kept
    }

    /// The call's record, ended at `now` (`None` on an egress node: the ingress writes the CDR,
    /// with this node's attempts in it, from its report).
    pub(super) fn into_cdr(self, disposition: Disposition, cause: Cause, final_code: Option<u16>, now: u64) -> Option<Cdr> {
        if self.forwarded_from.is_some() {
            return None;
        }
        let report = self.report.as_deref().cloned().unwrap_or_default();
        Some(Cdr {
            call_id: self.call_id.to_string(),
            trunk: Some(self.trunk.id.clone()),
            direction: self.direction,
            from: self.from_uri,
            to: self.number,
            start_ms: self.start_ms,
            answer_ms: self.answer_ms,
            end_ms: now,
            disposition,
            cause,
            final_code,
            failover: self.plan.as_ref().is_some_and(|p| p.failed_over()) || report.failover,
            failover_ms: self.failover_ms.or(report.failover_ms),
            primary_skipped: self.plan.as_ref().is_some_and(|p| p.skipped_primary) || report.primary_skipped,
            attempts: self.attempts.into_iter().flat_map(|a| if a.sub.is_empty() { vec![a.rec] } else { a.sub }).collect(),
        })
    }
}

/// One node a call may leave from.
#[derive(Debug, Clone)]
pub(super) struct EgressTarget {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) zone: String,
    pub(super) region: String,
    pub(super) addr: SocketAddr,
}

/// The ingress's egress choices for one call, and how far down them it is.
#[derive(Debug, Clone, Default)]
pub(super) struct EgressPlan {
    pub(super) order: Vec<EgressTarget>,
    pub(super) next: usize,
}

/// The calls of one node.
#[derive(Default)]
pub(super) struct Calls {
    /// Boxed: the table is sized for the most calls ever in progress, so its slots stay small.
    table: HashMap<u64, Box<Call>>,
    /// Answered calls by Call-ID (shared with the call's own `call_id`).
    dialogs: HashMap<Arc<str>, u64>,
    /// Calls that ended while their admission was pending or their slot was kept: call id -> the
    /// slot to give back when the grant comes or the PBX is done.
    pending_release: HashMap<u64, SlotId>,
    /// Egress: cancelled forwarded calls whose 487 waits for the PBX to be done with the attempt
    /// (call id -> the INVITE's server transaction): the ingress keeps its slot until it gets it.
    pending_final: HashMap<u64, TxKey>,
    rr: HashMap<String, RoundRobin>,
    /// Advanced HA round-robin turn per trunk.
    ha_turn: HashMap<String, u64>,
    /// Slots held for attempts left behind that may still be answered.
    pub(super) second: super::second_slot::SecondSlots,
}

impl Calls {
    pub(super) fn get(&self, id: u64) -> Option<&Call> {
        self.table.get(&id).map(|c| &**c)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Call> {
        self.table.get_mut(&id).map(|c| &mut **c)
    }

    pub(super) fn attempt(&self, id: u64, n: usize) -> Option<&Attempt> {
        self.get(id)?.attempts.get(n)
    }

    pub(super) fn attempt_mut(&mut self, id: u64, n: usize) -> Option<&mut Attempt> {
        self.get_mut(id)?.attempts.get_mut(n)
    }

    pub(super) fn insert(&mut self, id: u64, call: Call) {
        self.table.insert(id, Box::new(call));
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Call `id` was answered: in-dialog requests find it by Call-ID from now on.
    pub(super) fn answered(&mut self, id: u64, call_id: Arc<str>) {
        self.dialogs.insert(call_id, id);
    }

    /// The answered call with this Call-ID.
    pub(super) fn by_dialog(&self, call_id: &str) -> Option<u64> {
        self.dialogs.get(call_id).copied()
    }

    /// Call `id` ends: out of the table and the dialog index. Returns it, with its slot when that
    /// goes back now; a slot still being asked for, or kept while a cancelled attempt may still be
    /// answered, is owed later ([`Calls::settle`], [`Calls::admitted_after_end`]).
    pub(super) fn end(&mut self, id: u64) -> Option<(Box<Call>, Option<SlotId>)> {
        let call = self.table.remove(&id)?;
        if self.dialogs.get(&call.call_id) == Some(&id) {
            self.dialogs.remove(&call.call_id);
        }
        let release = match call.slot_state {
            SlotState::Asking | SlotState::Kept => {
                self.pending_release.insert(id, call.slot.clone());
                None
            }
            SlotState::Held => Some(call.slot.clone()),
            SlotState::None => None,
        };
        Some((call, release))
    }

    /// Admission answered for a call that had already ended: the slot it was owed, to give back.
    pub(super) fn admitted_after_end(&mut self, id: u64) -> Option<SlotId> {
        self.pending_release.remove(&id)
    }

    /// An ended call's PBX leg is done (its 487, its teardown answered, or Timer B): the slot and
    /// the held 487 it still owes, if any. Nothing while the call is still running.
    pub(super) fn settle(&mut self, id: u64) -> (Option<SlotId>, Option<TxKey>) {
        if self.table.contains_key(&id) {
            return (None, None);
        }
        (self.pending_release.remove(&id), self.pending_final.remove(&id))
    }

    /// Egress: answer the forwarded INVITE `key` with 487 only once the PBX is done (`settle`).
    pub(super) fn hold_final(&mut self, id: u64, key: TxKey) {
        self.pending_final.insert(id, key);
    }

    /// The round robin of `trunk`'s Load Balancing.
    pub(super) fn round_robin(&mut self, trunk: &str) -> &mut RoundRobin {
        self.rr.entry(trunk.to_string()).or_default()
    }

    /// The next Advanced HA turn of `trunk`.
    pub(super) fn next_turn(&mut self, trunk: &str) -> u64 {
        let t = self.ha_turn.entry(trunk.to_string()).or_default();
        *t = t.wrapping_add(1);
        *t - 1
    }

    /// Live forwarded attempts, `(call, attempt, egress node)`, in call order (the table's own
    /// order is per process, and a run must replay).
    pub(super) fn live_forwards(&self) -> Vec<(u64, usize, u64)> {
        let mut out: Vec<(u64, usize, u64)> = self
            .table
            .iter()
            .flat_map(|(id, c)| {
                c.attempts
                    .iter()
                    .enumerate()
                    .filter_map(move |(n, a)| a.egress_node.filter(|_| a.forward && !a.state.done()).map(|node| (*id, n, node)))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Egress: forwarded calls not yet answered, in call order.
    pub(super) fn forwarded_setups(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .table
            .iter()
            .filter(|(_, c)| c.forwarded_from.is_some() && c.answer_ms.is_none() && c.key.is_some())
            .map(|(id, _)| *id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Give back the memory of a burst.
    pub(super) fn shrink(&mut self) {
        super::shrink_map(&mut self.table);
        super::shrink_map(&mut self.dialogs);
    }
}

#[cfg(test)]
mod tests {
    use hatrunk_sip::transport::Proto;

    use super::*;

    fn call(call_id: &str, slot_state: SlotState, attempts: usize) -> Call {
        let trunk = hatrunk_core::trunk::parse_trunk(super::super::tests::TRUNK).expect("trunk");
        let rec = AttemptRecord {
            account: Some(Role::Primary),
            node: "n1".into(),
            zone: "z".into(),
            region: "r".into(),
            target: "sip:10.0.0.1:5060".into(),
            code: None,
            error: None,
            elapsed_ms: 0,
        };
        Call {
            key: None,
            trunk: Arc::new(trunk),
            direction: Direction::Inbound,
            via_account: None,
            req: None,
            call_id: call_id.into(),
            from_uri: "sip:c@h".into(),
            src: Src { proto: Proto::Udp, addr: "10.9.9.9:5060".parse().expect("addr"), conn: None },
            number: "1000".into(),
            slot: SlotId::new("n1", call_id, "t"),
            plan: None,
            attempts: (0..attempts).map(|_| Attempt::new(rec.clone(), "b".into(), 0, false)).collect(),
            start_ms: 0,
            answer_ms: None,
            failover_detect: None,
            failover_ms: None,
            slot_state,
            egress: None,
            forwarded_from: None,
            report: None,
            targets: None,
            session: None,
        }
    }

    #[test]
    fn ending_a_call_gives_its_slot_back_now_or_once_nothing_can_still_answer() {
        let mut calls = Calls::default();
        calls.insert(1, call("a", SlotState::Held, 1));
        calls.answered(1, "a".into());
        let (_, release) = calls.end(1).expect("ended");
        assert_eq!(release.as_ref().map(SlotId::as_str), Some("n1/a/t"), "a held slot goes at once");
        assert_eq!(calls.by_dialog("a"), None);
        // a cancelled call's kept slot waits for the PBX; a pending admission for its answer
        let mut kept = call("b", SlotState::Held, 1);
        assert!(kept.hold_slot());
        calls.insert(2, kept);
        calls.insert(3, call("c", SlotState::Asking, 0));
        assert_eq!(calls.settle(2), (None, None), "nothing while the call runs");
        assert_eq!(calls.end(2).expect("ended").1, None);
        assert_eq!(calls.end(3).expect("ended").1, None);
        assert_eq!(calls.settle(2).0.as_ref().map(SlotId::as_str), Some("n1/b/t"));
        assert_eq!(calls.settle(2).0, None, "owed once");
        assert_eq!(calls.admitted_after_end(3).as_ref().map(SlotId::as_str), Some("n1/c/t"));
        // never asked for, or a slot held without attempts: nothing kept
        let mut none = call("d", SlotState::Held, 0);
        assert!(!none.hold_slot());
        calls.insert(4, call("e", SlotState::None, 1));
        assert_eq!(calls.end(4).expect("ended").1, None);
        assert!(calls.end(4).is_none());
    }

    #[test]
    fn an_egress_node_writes_no_cdr_and_live_forwards_come_in_call_order() {
        let mut fwd = call("f", SlotState::None, 0);
        fwd.forwarded_from = Some("n2".into());
        assert!(fwd.into_cdr(Disposition::Answered, Cause::NormalClearing, None, 5).is_none());
        let cdr = call("g", SlotState::Held, 2).into_cdr(Disposition::NoAnswer, Cause::OriginatorCancel, Some(487), 9).expect("cdr");
        assert_eq!((cdr.end_ms, cdr.final_code, cdr.attempts.len()), (9, Some(487), 2));
        let mut calls = Calls::default();
        for id in [9, 3, 5] {
            let mut c = call(&format!("c{id}"), SlotState::Held, 2);
            c.attempts[1].forward = true;
            c.attempts[1].egress_node = Some(id + 100);
            calls.insert(id, c);
        }
        calls.attempt_mut(5, 1).expect("attempt").state = AttemptState::Done;
        assert_eq!(calls.live_forwards(), vec![(3, 1, 103), (9, 1, 109)]);
    }
}

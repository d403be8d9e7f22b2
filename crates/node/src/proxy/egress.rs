//! Advanced HA on the call path. At the ingress, after admission, the trunk's `advanced_ha` picks the
//! order of egress nodes ([`hatrunk_core::ha::egress_order`]); the call is delivered here when this
//! node comes first, else forwarded over SIP to the chosen node, and moved down the order when that
//! node does not take it (unreachable, no 100 within `forward_timeout_ms`, 408, or its own 503).
//! At the egress, a forwarded INVITE is recognised by its sender (a member's SIP address) and
//! delivered by the trunk's mode without a second admission; its responses carry a report of the
//! attempts towards the PBX, so the ingress writes the call's one CDR with every attempt in it.
//!
//! ```text
//!  carrier ─INVITE─► ingress ──admit──► order = [n3 (zone b), n1 (self, zone a), ...]
//!                       │  X-Hatrunk-Ingress          │ 100 within the timer? else next
//!                       └───────────────► egress n3 ──mode (Primary/Secondary)──► PBX
//!                       ◄── final/2xx + X-Hatrunk-Report (attempts, failover) ───┘
//! ```

use hatrunk_core::cdr::{AttemptRecord, Cause, Disposition, EgressReport};
use hatrunk_core::ha::egress_order;
use hatrunk_core::policy::Outcome;
use hatrunk_core::trunk::AdvancedHa;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::SipMessage;

use super::calls::{Attempt, AttemptState, Calls, EgressPlan, EgressTarget};
use super::context::Cx;
use super::{CallTimer, Owner, Src};

/// Marks an INVITE forwarded by another member (value: the ingress node's name and its signature,
/// see `forward_sig`).
pub(super) const INGRESS_HEADER: &str = "X-Hatrunk-Ingress";
/// The egress's report on a forwarded call (JSON [`EgressReport`]).
pub(super) const REPORT_HEADER: &str = "X-Hatrunk-Report";
/// On an egress's 503 without a report: it gave up on the call while its attempts towards the PBX
/// may still be answered (its ingress looked down to it), so the ingress holds a second slot for
/// them as for any forward it leaves unsettled.
pub(super) const UNSETTLED_HEADER: &str = "X-Hatrunk-Unsettled";
/// A report longer than this is ignored (two attempts fit in a few hundred bytes).
const MAX_REPORT: usize = 8192;

impl Calls {
    /// The call was admitted: deliver it here, or choose where it leaves from.
    pub(super) fn route_admitted(&mut self, cx: &mut Cx<'_>, id: u64) {
        let Some(call) = self.get(id) else {
            return;
        };
        let level = call.trunk.advanced_ha;
        let local = call.direction != hatrunk_core::cdr::Direction::Inbound || call.forwarded_from.is_some() || level == AdvancedHa::None;
        if local {
            return self.deliver_locally(cx, id);
        }
        let (trunk_id, primary_region) = (call.trunk.id.clone(), call.trunk.primary_region.clone());
        let view = cx.cluster.view(cx.now);
        let turn = self.next_turn(&trunk_id);
        let order = egress_order(level, &view, primary_region.as_deref(), turn)
            .into_iter()
            .filter_map(|nid| view.get(nid))
            .filter_map(|m| {
                let addr = if m.member.id == cx.cfg.node_id { Some(cx.cfg.udp) } else { m.member.sip_addr.parse().ok() };
                addr.map(|addr| EgressTarget {
                    id: m.member.id,
                    name: m.member.name.clone(),
                    zone: m.member.zone.clone(),
                    region: m.member.region.clone(),
                    addr,
                })
            })
            .collect();
        if let Some(c) = self.get_mut(id) {
            c.egress = Some(Box::new(EgressPlan { order, next: 0 }));
        }
        self.next_egress_or_fail(cx, id);
    }

    /// Start the next egress choice; false when none is left. A later choice the detector has
    /// since seen down is passed over: a call admitted just before a region went silent would
    /// otherwise wait out the forward timer once more for each of that region's nodes.
    fn next_egress(&mut self, cx: &mut Cx<'_>, id: u64) -> bool {
        let moved = self.get(id).and_then(|c| c.egress.as_ref()).is_some_and(|p| p.next > 0);
        let view = moved.then(|| cx.cluster.view(cx.now));
        let target = {
            let Some(plan) = self.get_mut(id).and_then(|c| c.egress.as_mut()) else {
                return false;
            };
            loop {
                let Some(t) = plan.order.get(plan.next).cloned() else {
                    return false;
                };
                plan.next += 1;
                let down = view.as_ref().is_some_and(|v| t.id != cx.cfg.node_id && !v.get(t.id).is_some_and(|m| m.healthy()));
                if !down {
                    break t;
                }
            }
        };
        if target.id == cx.cfg.node_id {
            self.deliver_locally(cx, id);
        } else {
            self.start_forward(cx, id, target);
        }
        true
    }

    fn start_forward(&mut self, cx: &mut Cx<'_>, id: u64, t: EgressTarget) {
        let Some(call) = self.get(id) else {
            return;
        };
        let n = call.attempts.len();
        let ruri = format!("sip:{}@{}", call.number, t.addr);
        let rec = AttemptRecord {
            account: None,
            node: t.name.as_str().into(),
            zone: t.zone.as_str().into(),
            region: t.region.as_str().into(),
            target: format!("sip:{}", t.addr),
            code: None,
            error: None,
            elapsed_ms: 0,
        };
        let mut fwd = self.forward_request(cx, id, &ruri, Proto::Udp, None);
        let secret = cx.store.cluster_secret();
        let call_id = fwd.header("Call-ID").unwrap_or("");
        let value = super::forward_sig::ingress_value(secret.as_deref(), call_id, &cx.cfg.node, Some(cx.store.applied()));
        fwd.set(INGRESS_HEADER, value);
        let branch = cx.start_client(fwd, Src { proto: Proto::Udp, addr: t.addr, conn: None }, Owner::Call(id, n));
        cx.metrics.forwards.with_label_values(&[&t.region, &t.zone]).inc();
        let now = cx.now;
        if let Some(c) = self.get_mut(id) {
            let mut a = Attempt::new(rec, branch, now, true);
            a.egress_node = Some(t.id);
            c.attempts.push(a);
        }
        cx.io.arm_call(now + cx.cfg.forward_timeout_ms, id, CallTimer::Forward(n as u32));
    }

    /// A forwarded attempt ended without its node taking the call: move on, or give up.
    pub(super) fn egress_fault(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, outcome: Outcome) {
        self.egress_fault_with(cx, id, n, outcome, false);
    }

    /// [`Self::egress_fault`]; `let_go`: the node answered with a final response but said its own
    /// attempts may still be answered ([`UNSETTLED_HEADER`]).
    pub(super) fn egress_fault_with(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, outcome: Outcome, let_go: bool) {
        let now = cx.now;
        let Some(a) = self.attempt_mut(id, n) else {
            return;
        };
        if a.state.done() {
            // already answered or given up (an answered call's node dying later is not a new choice)
            return;
        }
        // the node may be alive after all (slow, or only its SIP cut off): a setup moved off it is
        // CANCELled there, so the PBX never sees it twice. Before a provisional response a CANCEL
        // may not be sent (RFC 3261 section 9.1): one that comes later is CANCELled then
        // (`late_response`).
        let pending = !matches!(outcome, Outcome::Final(_));
        let cancel = (pending && matches!(a.state, AttemptState::Trying | AttemptState::Ringing)).then(|| a.branch.clone());
        let silent = (pending && a.state == AttemptState::Sent).then(|| a.branch.clone());
        a.state = AttemptState::Done;
        a.unsettled = pending || let_go;
        a.rec.set_outcome(outcome);
        a.rec.elapsed_ms = now.saturating_sub(a.started);
        let reason = outcome.label();
        cx.metrics.egress_moves.with_label_values(&[&reason]).inc();
        tracing::info!(call = id, node = %a.rec.node, zone = %a.rec.zone, %reason, "egress node did not take the call; next choice");
        if let Some(branch) = cancel {
            cx.cancel_branch(&branch);
        }
        if let Some(branch) = silent {
            cx.tx.mute(&branch);
        }
        let more = self.get(id).and_then(|c| c.egress.as_ref()).is_some_and(|p| p.next < p.order.len());
        if more {
            self.go_on(cx, id, n);
        } else {
            self.no_egress(cx, id);
        }
    }

    /// The next egress choice, or 503 when none is left.
    pub(super) fn next_egress_or_fail(&mut self, cx: &mut Cx<'_>, id: u64) {
        if !self.next_egress(cx, id) {
            self.no_egress(cx, id);
        }
    }

    /// No node can deliver the call: 503 upstream (the carrier may route elsewhere).
    fn no_egress(&mut self, cx: &mut Cx<'_>, id: u64) {
        let Some(key) = self.get(id).map(|c| c.key()) else {
            return;
        };
        cx.respond_key(&key, 503, Some("Q.850;cause=41;text=\"No cluster node could take the call\""));
        self.finish(cx, id, Disposition::Congestion, Cause::FarendConnectionError, Some(503), false);
    }

    /// The forward timer: the egress node sent nothing at all (not even 100 Trying).
    pub(super) fn forward_timer(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        let silent = self.attempt(id, n).is_some_and(|a| a.state == AttemptState::Sent);
        if silent {
            self.egress_fault(cx, id, n, Outcome::NoAnswer);
        }
    }

    /// Calls being set up through a node the detector now says is down move on. This is the case the
    /// forward timer cannot see: the node said 100 Trying and then died, and nothing we send it any
    /// more would bring back an ICMP error. Run a few times a second.
    pub(super) fn check_egress(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let live = self.live_forwards();
        if live.is_empty() {
            return;
        }
        let view = cx.cluster.view(now);
        let stuck: Vec<(u64, usize)> =
            live.into_iter().filter(|(_, _, node)| !view.get(*node).is_some_and(|m| m.healthy())).map(|(id, n, _)| (id, n)).collect();
        for (id, n) in stuck {
            self.egress_fault(cx, id, n, Outcome::ConnectionError);
        }
    }

    /// Egress side: a forwarded call still being set up whose ingress the detector says is down is
    /// cancelled as if the ingress had sent CANCEL: the ingress has moved it elsewhere by now (or is
    /// gone, and its carrier with it), and it holds a second slot for this forward only for about a
    /// minute (`second_slot.rs`), while the PBX could ring here for Timer C's three. Same rule and
    /// same view as the ingress's, so both sides let go of the forward at about the same time.
    pub(super) fn check_ingress(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let mut from: Vec<(u64, &str)> = self
            .forwarded_setups()
            .into_iter()
            .filter_map(|id| self.get(id).and_then(|c| c.forwarded_from.as_deref()).map(|n| (id, n)))
            .collect();
        if from.is_empty() {
            return;
        }
        let view = cx.cluster.view(now);
        from.retain(|(_, name)| view.members.iter().any(|m| m.member.name == *name && !m.alive));
        let lost: Vec<(u64, String)> = from.into_iter().map(|(id, n)| (id, n.to_string())).collect();
        for (id, ingress) in lost {
            tracing::info!(call = id, %ingress, "the ingress of a forwarded call is down; cancelling it towards the PBX");
            let key = self.get(id).map(|c| c.key()).unwrap_or_default();
            self.cancel_call(cx, id, key, true);
        }
    }

    /// Egress side: the report for the ingress, when this call was forwarded to us.
    pub(super) fn egress_report(&self, id: u64, result: Option<(Disposition, Cause)>) -> Option<String> {
        let call = self.get(id)?;
        call.forwarded_from.as_ref()?;
        let report = EgressReport {
            attempts: call.attempts.iter().map(|a| a.rec.clone()).collect(),
            failover: call.plan.as_ref().is_some_and(|p| p.failed_over()),
            failover_ms: call.failover_ms,
            primary_skipped: call.plan.as_ref().is_some_and(|p| p.skipped_primary),
            disposition: result.map(|r| r.0),
            cause: result.map(|r| r.1),
        };
        serde_json::to_string(&report).ok()
    }
}

/// Ingress side: take the egress's report out of a response (never passed upstream).
pub(super) fn take_report(resp: &mut SipMessage) -> Option<EgressReport> {
    let raw = resp.header(REPORT_HEADER).map(str::to_string);
    resp.remove_all(REPORT_HEADER);
    let raw = raw?;
    if raw.len() > MAX_REPORT {
        return None;
    }
    serde_json::from_str(&raw).ok()
}

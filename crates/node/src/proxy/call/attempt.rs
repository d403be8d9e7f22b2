//! An attempt's life after it was sent: its responses (provisional, answer, failure), silence and
//! unreachable targets, and what the trunk's plan does next (the next account, or the end of the call).

use hatrunk_core::cdr::classify;
use hatrunk_core::plan::Step;
use hatrunk_core::policy::Outcome;
use hatrunk_sip::SipMessage;

use super::super::calls::{AttemptState, Calls};
use super::super::context::Cx;
use super::super::egress::{take_report, REPORT_HEADER, UNSETTLED_HEADER};
use super::super::{build, CallTimer, Owner};

/// RFC 3261 Timer C: > 3 minutes.
const TIMER_C_MS: u64 = 181_000;

impl Calls {
    pub(in crate::proxy) fn attempt_response(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, mut resp: SipMessage) {
        let code = resp.code().unwrap_or(0);
        let live = self.attempt(id, n).is_some_and(|a| !a.state.done());
        if !live {
            return self.late_response(cx, id, n, resp);
        }
        let forward = self.attempt(id, n).is_some_and(|a| a.forward);
        if let Some(a) = self.attempt_mut(id, n) {
            if a.state == AttemptState::Sent {
                a.state = AttemptState::Trying;
            }
        }
        if code == 100 {
            return;
        }
        if code >= 200 {
            let report = if forward {
                take_report(&mut resp)
            } else {
                {
                    resp.remove_all(REPORT_HEADER);
                    None
                }
            };
            if forward && report.is_none() && (code == 503 || code == 408) {
                // the egress node itself could not take the call: the next node, not the caller
                let let_go = resp.header(UNSETTLED_HEADER).is_some();
                return self.egress_fault_with(cx, id, n, Outcome::Final(code), let_go);
            }
            if let (Some(r), Some(c)) = (report, self.get_mut(id)) {
                if let Some(a) = c.attempts.get_mut(n) {
                    a.sub = r.attempts.clone();
                }
                c.report = Some(Box::new(r));
            }
        }
        if code < 200 {
            let key = {
                let Some(call) = self.get_mut(id) else {
                    return;
                };
                call.attempts[n].state = AttemptState::Ringing;
                call.key()
            };
            cx.io.arm_call(cx.now + TIMER_C_MS, id, CallTimer::TimerC(n as u32));
            return cx.respond_msg(&key, resp);
        }
        if code < 300 {
            let now = cx.now;
            // a session timer (RFC 4028): what ending the session would need, kept before the
            // INVITE is dropped
            let session = super::super::session::interval_ms(&resp).and_then(|_| {
                let call = self.get(id)?;
                let dest = cx.tx.clients.get(&call.attempts.get(n)?.branch).map(|e| e.dest)?;
                Some((call.req.as_deref()?.clone(), resp.clone(), dest))
            });
            let (key, call_id, max_s, branch) = {
                let Some(call) = self.get_mut(id) else {
                    return;
                };
                let a = &mut call.attempts[n];
                a.state = AttemptState::Done;
                a.rec.elapsed_ms = now.saturating_sub(a.started);
                a.rec.set_outcome(Outcome::Answered(code));
                call.answer_ms = Some(now);
                call.req = None; // no new attempt will need it
                call.targets = None;
                call.attempts.shrink_to_fit();
                call.slot.shrink_to_fit();
                // the INVITE's server transaction is done with at the answer: its key moves to
                // the answering client transaction (below) instead of living as long as the call
                let key = call.key.take().map(|k| *k).unwrap_or_default();
                (key, call.call_id.clone(), call.trunk.max_call_duration_s, call.attempts[n].branch.clone())
            };
            // the same 2xx again (ours upstream, or the caller's ACK, was lost) goes to the caller
            // from now on, during the call and after it (mod.rs, Owner::Answered)
            if let Some(e) = cx.tx.clients.get_mut(&branch) {
                e.owner = Owner::Answered(key.clone());
            }
            cx.metrics.answered.inc();
            if let Some(r) = self.egress_report(id, None) {
                resp.set(REPORT_HEADER, r);
            }
            cx.respond_msg(&key, resp);
            self.answered(id, call_id);
            cx.io.arm_call(cx.now + u64::from(max_s) * 1000, id, CallTimer::MaxDuration);
            if let Some((invite, ok, dest)) = session {
                self.session_started(cx, id, &invite, &ok, dest);
            }
            return;
        }
        if let Some(c) = self.get_mut(id) {
            c.attempts[n].state = AttemptState::Done;
        }
        self.attempt_outcome(cx, id, n, Outcome::Final(code), Some(resp));
    }

    pub(in crate::proxy) fn attempt_unreachable(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        if self.is_forward(id, n) {
            return self.egress_fault(cx, id, n, Outcome::ConnectionError);
        }
        if self.mark_done(id, n) {
            self.attempt_outcome(cx, id, n, Outcome::ConnectionError, None);
        }
    }

    pub(in crate::proxy) fn attempt_timeout(&mut self, cx: &mut Cx<'_>, id: u64, n: usize) {
        if self.is_forward(id, n) {
            return self.egress_fault(cx, id, n, Outcome::NoAnswer); // a no-op once the attempt is done
        }
        if self.mark_done(id, n) {
            self.attempt_outcome(cx, id, n, Outcome::NoAnswer, None);
        }
    }

    /// The failover timer (or Timer C) fired for attempt `n`.
    pub(in crate::proxy) fn attempt_no_answer(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, timer_c: bool) {
        let Some(a) = self.attempt(id, n) else {
            return;
        };
        let ringing = a.state == AttemptState::Ringing;
        if a.state.done() || (ringing && !timer_c) {
            return;
        }
        let branch = a.branch.clone();
        self.mark_done(id, n);
        if let Some(a) = self.attempt_mut(id, n) {
            // the PBX may still answer it: the call's slot outlives the call until it certainly
            // cannot (`keep_for_unsettled`; simulation seed 2400404: the Primary's answer was lost,
            // the Secondary's call ended first, and the Primary's dialog was up with no slot)
            a.unsettled = true;
        }
        if ringing {
            cx.cancel_branch(&branch);
        } else {
            cx.tx.mute(&branch);
        }
        self.attempt_outcome(cx, id, n, Outcome::NoAnswer, None);
    }

    fn is_forward(&self, id: u64, n: usize) -> bool {
        self.attempt(id, n).is_some_and(|a| a.forward)
    }

    fn mark_done(&mut self, id: u64, n: usize) -> bool {
        match self.attempt_mut(id, n) {
            Some(a) if !a.state.done() => {
                a.state = AttemptState::Done;
                true
            }
            _ => false,
        }
    }

    /// Attempt `n` ended with `outcome`: fail over or finish.
    pub(super) fn attempt_outcome(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, outcome: Outcome, resp: Option<SipMessage>) {
        let now = cx.now;
        let Some(call) = self.get_mut(id) else {
            return;
        };
        if let Some(a) = call.attempts.get_mut(n) {
            a.rec.set_outcome(outcome);
            a.rec.elapsed_ms = now.saturating_sub(a.started);
        }
        // RFC 3263 section 4.3: a 503 or a transport failure moves to the name's next address
        if matches!(outcome, Outcome::Final(503) | Outcome::ConnectionError) && self.next_target(cx, id, n) {
            return;
        }
        let Some(call) = self.get_mut(id) else {
            return;
        };
        let step = call.plan.as_mut().map(|p| p.on_outcome(outcome)).unwrap_or(Step::Done);
        if let Step::Try(role) = step {
            call.failover_detect = Some(now);
            cx.metrics.failovers.with_label_values(&[&outcome.label()]).inc();
            cx.episodes.failover(&call.trunk.id, &outcome.label(), now);
            return self.start_attempt(cx, id, role);
        }
        let key = call.key();
        let (mut disposition, mut cause) = classify(outcome);
        if let Some(r) = &call.report {
            // the egress node saw the PBX's answer first hand
            disposition = r.disposition.unwrap_or(disposition);
            cause = r.cause.unwrap_or(cause);
        }
        let reply = match resp {
            Some(mut r) => {
                if r.code() == Some(503) {
                    // section 16.7 step 6: a proxy does not pass a 503 upstream
                    r.start = hatrunk_sip::StartLine::Response { code: 500, reason: "Server Internal Error".into() };
                }
                Some(r)
            }
            None => {
                let code = match outcome {
                    Outcome::NoAnswer => 408,
                    Outcome::Cancelled => 487,
                    _ => 480,
                };
                let tag = cx.io.tag();
                cx.tx.servers.get(&key).map(|e| build::response(&e.req, code, Some(&tag)))
            }
        };
        let Some(mut reply) = reply else {
            return self.finish(cx, id, disposition, cause, None, false);
        };
        let code = reply.code().unwrap_or(500);
        if let Some(r) = self.egress_report(id, Some((disposition, cause))) {
            reply.set(REPORT_HEADER, r);
        }
        cx.respond_msg(&key, reply);
        self.finish(cx, id, disposition, cause, Some(code), false);
    }
}

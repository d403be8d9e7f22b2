//! Ending attempts we no longer want: the caller's CANCEL (RFC 3261 section 16.10, sent downstream
//! only after a provisional response, section 9.1), and answers that come too late (after failover or
//! CANCEL), which are CANCELled or ACKed and BYEd so no leg stays up outside the pool.

use hatrunk_core::cdr::{Cause, Disposition};
use hatrunk_core::policy::Outcome;
use hatrunk_sip::headers::addr_uri;
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use super::calls::{AttemptState, Calls};
use super::context::Cx;
use super::egress::UNSETTLED_HEADER;
use super::{build, Owner, Src};

impl Calls {
    pub(super) fn on_cancel(&mut self, cx: &mut Cx<'_>, msg: SipMessage, src: Src) {
        let key = TxKey::of(&msg);
        let invite_key = key.with_method("INVITE");
        let ok = cx.tx.servers.contains_key(&invite_key);
        let reply = build::response(&msg, if ok { 200 } else { 481 }, Some(&cx.io.tag()));
        cx.send(src, reply);
        let Some(id) = cx.tx.servers.get(&invite_key).and_then(|e| e.call) else {
            // an INVITE relayed to a PBX's flow (`flow.rs`): CANCEL it on, hop by hop
            // (the scan only for an INVITE we have: a stray CANCEL costs no walk of the table)
            let relayed = ok
                .then(|| {
                    cx.tx.clients.iter().find(|(_, e)| matches!(&e.owner, Owner::Relay(k, _) if *k == invite_key)).map(|(b, _)| b.clone())
                })
                .flatten();
            if let Some(branch) = relayed {
                cx.cancel_branch(&branch);
            }
            return;
        };
        self.cancel_call(cx, id, invite_key, false);
    }

    /// Call `id` (its INVITE's server transaction `invite_key`) is cancelled before an answer. With
    /// `let_go` (an egress giving up on a forward whose ingress looks down) the ingress is told at
    /// once, with a 503 marked [`UNSETTLED_HEADER`], instead of a 487 held until the PBX is done: the
    /// ingress may be alive after all (a one-way cut: it sees us, we do not see it), and it then
    /// moves the call on and holds a second slot for our attempts itself (simulation seed 2300667:
    /// the held 487 came after the carrier's Timer B, so the call never got a final response).
    pub(super) fn cancel_call(&mut self, cx: &mut Cx<'_>, id: u64, invite_key: TxKey, let_go: bool) {
        let Some(call) = self.get_mut(id) else {
            return;
        };
        if call.answer_ms.is_some() {
            return;
        }
        if let Some(p) = call.plan.as_mut() {
            p.cancel();
        }
        let (mut live, mut silent) = (Vec::new(), Vec::new());
        for a in call.attempts.iter_mut().filter(|a| !a.state.done()) {
            let heard = a.state.heard();
            a.state = AttemptState::Done;
            a.rec.set_outcome(Outcome::Cancelled);
            // section 9.1: a CANCEL may follow any provisional response, 100 included; before
            // one, the INVITE is no longer retransmitted (each copy is one more chance of a
            // dialog nobody wants, seed 2100915) and a late answer is still CANCELled or torn down
            if heard {
                live.push(a.branch.clone());
            } else {
                silent.push(a.branch.clone());
            }
        }
        // the PBX may answer before it sees our CANCEL: until it has said 487, or its late answer
        // is torn down, the leg may be up, so the slot stays taken (at most Timer B). An egress
        // node holds no slot, but the ingress that does waits for our final response: it gets its
        // 487 only then (it released the slot at once on our 487 while the PBX, back from a crash,
        // could still answer our retransmitted INVITE; simulation seed 209)
        let egress_hold = call.forwarded_from.is_some() && !call.attempts.is_empty() && !let_go;
        if call.hold_slot() || egress_hold {
            cx.io.arm_call(cx.now + hatrunk_sip::transaction::TIMEOUT, id, super::CallTimer::HeldSlot);
        }
        for branch in live {
            cx.cancel_branch(&branch);
        }
        for branch in silent {
            cx.tx.mute(&branch);
        }
        if egress_hold {
            self.hold_final(id, invite_key);
        } else if let_go {
            let tag = cx.io.tag();
            if let Some(mut reply) = cx.tx.servers.get(&invite_key).map(|e| build::response(&e.req, 503, Some(&tag))) {
                reply.push(UNSETTLED_HEADER, "1");
                cx.respond_msg(&invite_key, reply);
            }
        } else {
            cx.respond_key(&invite_key, 487, None);
        }
        self.finish(cx, id, Disposition::NoAnswer, Cause::OriginatorCancel, Some(487), false);
    }

    /// The PBX is done with cancelled call `id`'s attempts (or Timer B passed): give back its slot if
    /// it is still held, and send an egress's held 487.
    pub(super) fn release_held(&mut self, cx: &mut Cx<'_>, id: u64) {
        // nothing while the call is still running: its own end releases it
        let (slot, held_487) = self.settle(id);
        if let Some(slot) = slot {
            cx.io.push(super::Action::Release { slot });
        }
        if let Some(key) = held_487 {
            cx.respond_key(&key, 487, None);
        }
    }

    /// A response for an attempt we already gave up on (timed out, cancelled, or its call ended).
    pub(super) fn late_response(&mut self, cx: &mut Cx<'_>, id: u64, n: usize, resp: SipMessage) {
        let code = resp.code().unwrap_or(0);
        if code >= 300 {
            // a cancelled call's attempt is over (its 487). A late answer is not: the PBX's leg is
            // up until our BYE below is answered, and only then may the slot go (simulation seed
            // 6: released at the 200, another call was admitted while the leg was still up)
            self.settle_attempt(cx, id, n);
        }
        let branch = self.attempt(id, n).map(|a| a.branch.clone());
        let entry =
            branch.as_ref().and_then(|b| cx.tx.clients.get(b)).or_else(|| cx.tx.clients.values().find(|c| c.owner == Owner::Call(id, n)));
        let Some((dest, request)) = entry.map(|e| (e.dest, e.request.clone())) else {
            return;
        };
        if code < 200 {
            // we could not CANCEL before a provisional response (section 9.1); now we can
            if let Some(c) = build::cancel_for(&request) {
                cx.send(dest, c);
            }
        } else if code < 300 {
            self.tear_down(cx, &resp, dest, id, n);
        }
    }

    /// Answered too late (after failover or CANCEL): ACK and BYE it so no leg stays up unaccounted;
    /// what call `id` holds for attempt `n` goes when the BYE is done.
    fn tear_down(&mut self, cx: &mut Cx<'_>, resp: &SipMessage, dest: Src, id: u64, n: usize) {
        let target = resp.header("Contact").map(|c| addr_uri(c).to_string()).unwrap_or_default();
        let seq = resp.header("CSeq").and_then(|c| c.split_whitespace().next()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
        for (method, cseq) in [(hatrunk_sip::Method::Ack, seq), (hatrunk_sip::Method::Bye, seq + 1)] {
            let mut m = SipMessage::request(method.clone(), target.clone());
            for h in ["From", "To", "Call-ID"] {
                if let Some(v) = resp.header(h) {
                    m.push(h, v);
                }
            }
            m.push("CSeq", format!("{cseq} {}", method.as_str()));
            m.push("Max-Forwards", "70");
            if method == hatrunk_sip::Method::Ack {
                let b = cx.io.branch();
                m.push_front("Via", format!("SIP/2.0/{} {};branch={b}", dest.proto.via_name(), cx.hostport(dest.proto)));
                cx.send(dest, m);
            } else {
                cx.start_client(m, dest, Owner::TearDown(id, n));
            }
        }
    }
}

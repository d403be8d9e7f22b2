//! In-dialog requests (RFC 3261 section 16.12 loose routing): ACK for 2xx forwarded statelessly,
//! everything else (BYE, re-INVITE, INFO, UPDATE...) relayed through a transaction. A BYE ends the
//! call's accounting: its CDR is written as it passes, its slot goes back once the far end has
//! answered it (or its transaction timed out). Calls whose BYE never comes are cleared by the
//! trunk's `max_call_duration_s` safety timer.

use hatrunk_core::cdr::{Cause, Disposition};
use hatrunk_core::slot::SlotId;
use hatrunk_sip::headers::SipUri;
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::{Method, SipMessage};

use super::calls::Calls;
use super::context::Cx;
use super::{Action, Owner, Src};

impl Calls {
    /// A BYE whose own Route entry (`ht`, from [`Engine::pop_own_routes`]) names an earlier run of
    /// this node, for a call that run admitted: the kept slot it may free, (trunk, Call-ID).
    ///
    /// Freed only when the far end answers the BYE 2xx, not as it passes: a BYE the earlier run
    /// already relayed (its 200 was lost, the caller retransmits across the restart) names the
    /// same boot, but its call ended before the restart and its slot was no longer kept; the far
    /// end answers that one 481. Freeing on passage let such a retransmission free the slot of a
    /// call still up (simulation seed 701932: 14 calls against a limit of 13).
    fn earlier_run_bye(cx: &Cx<'_>, ht: &str, msg: &SipMessage) -> Option<Kept> {
        let (boot, trunk) = ht.split_once('.')?;
        if boot == cx.boot() {
            return None; // this run's call: its slot went with the call record
        }
        Some(Kept::Inherited { trunk: trunk.to_string(), call_id: msg.header("Call-ID").unwrap_or_default().to_string() })
    }

    /// A request inside a dialog, with its server transaction `key` already created.
    pub(super) fn relay_in_dialog(&mut self, cx: &mut Cx<'_>, key: TxKey, mut msg: SipMessage, src: Src) {
        let (ht, flow) = cx.pop_own_routes(&mut msg);
        let kept = ht.filter(|_| msg.method() == Some(&Method::Bye)).and_then(|ht| Self::earlier_run_bye(cx, &ht, &msg));
        let ruri_is_us = msg.uri().and_then(|u| SipUri::parse(u).ok()).is_some_and(|u| cx.is_us(&u));
        if msg.header("Route").is_none() && ruri_is_us {
            return cx.respond_key(&key, 481, None);
        }
        let Some(dest) = super::flow::in_dialog_dest(cx, flow, src).or_else(|| cx.next_hop(&msg)) else {
            return cx.respond_key(&key, 404, None);
        };
        let mut kept = kept;
        if let Some(id) = msg.header("Call-ID").and_then(|c| self.by_dialog(c)) {
            self.session_request(id, &msg);
            if msg.method() == Some(&Method::Bye) {
                // the call ends now (its CDR); its slot when the far end has the BYE
                kept = self.finish_holding(cx, id, Disposition::Answered, Cause::NormalClearing, None, true).map(Kept::Slot).or(kept);
            }
        }
        let mf = msg.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
        msg.set("Max-Forwards", mf.saturating_sub(1).to_string());
        cx.start_client(msg, dest, Owner::Relay(key, kept));
    }

    /// The call outlived `max_call_duration_s` with no BYE: give its slot back.
    pub(super) fn dialog_expired(&mut self, cx: &mut Cx<'_>, id: u64) {
        if let Some(call_id) = self.get(id).filter(|c| c.answer_ms.is_some()).map(|c| c.call_id.clone()) {
            tracing::warn!(%call_id, "call reached its maximum duration without a BYE; slot reclaimed");
            self.finish(cx, id, Disposition::Answered, Cause::MaxDurationExceeded, None, true);
        }
    }
}

/// ACK for a 2xx (no server transaction): forward statelessly along the route set.
pub(super) fn route_ack(cx: &mut Cx<'_>, mut msg: SipMessage, src: Src) {
    let (_, flow) = cx.pop_own_routes(&mut msg);
    // none when it is for us: the ACK of a response sent without a transaction (a 503 while
    // shedding, a refusal to a stranger), or a stray; it ends here
    let Some(dest) = super::flow::in_dialog_dest(cx, flow, src).or_else(|| cx.next_hop(&msg)) else {
        return;
    };
    let mf = msg.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
    if mf == 0 {
        return;
    }
    msg.set("Max-Forwards", (mf - 1).to_string());
    let b = cx.io.branch();
    msg.push_front("Via", format!("SIP/2.0/{} {};branch={b}", dest.proto.via_name(), cx.hostport(dest.proto)));
    cx.send(dest, msg);
}

/// What a relayed BYE frees once the far end has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kept {
    /// A slot an earlier run of this node kept for the call: only a 2xx frees it (see
    /// [`Calls::earlier_run_bye`]), through the ledger, once per call.
    Inherited { trunk: String, call_id: String },
    /// This run's slot of the call: freed by the BYE's final response, or when its transaction
    /// times out. Not as the BYE passes: if this node restarts before the far end has it, the slot
    /// is still kept, and the retransmitted BYE frees it once (simulation seed 910034: freed on
    /// passage and re-used, then freed again by the retransmission after a power loss, 16 calls
    /// on a limit of 15).
    Slot(SlotId),
}

/// A response to a relayed request goes back through its server transaction.
pub(super) fn relay_response(cx: &mut Cx<'_>, key: &TxKey, kept: Option<Kept>, resp: SipMessage) {
    let code = resp.code().unwrap_or(0);
    match kept {
        Some(Kept::Inherited { trunk, call_id }) if (200..300).contains(&code) => cx.io.push(Action::ReleaseInherited { trunk, call_id }),
        Some(Kept::Slot(slot)) if code >= 200 => cx.io.push(Action::Release { slot }),
        _ => {}
    }
    cx.respond_msg(key, resp);
}

/// A relayed request whose transaction ended without a final response: answer it, and give back
/// the slot of a BYE's call (the far end is gone or silent; it cannot hold the call for ever).
pub(super) fn relay_failed(cx: &mut Cx<'_>, key: &TxKey, kept: Option<Kept>, unreachable: bool) {
    if let Some(Kept::Slot(slot)) = kept {
        cx.io.push(Action::Release { slot });
    }
    cx.respond_key(key, if unreachable { 503 } else { 408 }, None);
}

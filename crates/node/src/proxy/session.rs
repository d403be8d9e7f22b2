//! Session timers (RFC 4028) seen from the proxy: when the answer to a call's INVITE carries
//! `Session-Expires`, the caller and the PBX agreed to refresh the session within that interval
//! (a re-INVITE or UPDATE answered 2xx). A call not refreshed in time is over: both ends should
//! have sent BYE (section 10), and when neither BYE comes (a caller killed, its BYE lost) the node
//! sends one to each side itself, writes the CDR (cause `SESSION_EXPIRED`) and gives the slot
//! back, instead of holding it for `max_call_duration_s` (4 h by default). Only the node holding
//! the call's slot (its ingress) does this; an egress node is ended by the BYE passing through.

use hatrunk_core::cdr::{Cause, Disposition};
use hatrunk_sip::headers::addr_uri;
use hatrunk_sip::{Method, SipMessage};

use super::calls::Calls;
use super::context::Cx;
use super::{CallTimer, Owner, Src};

/// What a call needs to know to end an expired session itself.
pub(super) struct Session {
    interval_ms: u64,
    /// Over at this time unless refreshed before.
    deadline: u64,
    /// The caller's From and the PBX's To, tags included, and the Call-ID.
    from: String,
    to: String,
    call_id: String,
    caller: (Src, String),
    pbx: (Src, String),
    /// The highest CSeq seen from each side (the BYEs take the next).
    caller_cseq: u32,
    pbx_cseq: u32,
}

/// `Session-Expires: delta-seconds[;refresher=...]` as milliseconds; none if absent or malformed.
pub(super) fn interval_ms(msg: &SipMessage) -> Option<u64> {
    let v = msg.header("Session-Expires").or_else(|| msg.header("x"))?;
    let secs: u64 = v.split(';').next()?.trim().parse().ok()?;
    (secs > 0).then_some(secs.saturating_mul(1000))
}

fn cseq(msg: &SipMessage) -> u32 {
    msg.header("CSeq").and_then(|c| c.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn tag(header: &str) -> Option<&str> {
    header.split(';').skip(1).find_map(|p| p.trim().strip_prefix("tag="))
}

impl Calls {
    /// Call `id` was answered with `ok` after `invite` was sent to `pbx`: track its session if the
    /// answer set a timer (the ingress only).
    pub(super) fn session_started(&mut self, cx: &mut Cx<'_>, id: u64, invite: &SipMessage, ok: &SipMessage, pbx: Src) {
        let Some(interval_ms) = interval_ms(ok) else {
            return;
        };
        let Some(call) = self.get_mut(id).filter(|c| c.forwarded_from.is_none()) else {
            return;
        };
        let header = |m: &SipMessage, h: &str| m.header(h).unwrap_or("").to_string();
        let contact = |m: &SipMessage| m.header("Contact").map(|c| addr_uri(c).to_string()).unwrap_or_default();
        let deadline = cx.now + interval_ms;
        call.session = Some(Box::new(Session {
            interval_ms,
            deadline,
            from: header(invite, "From"),
            to: header(ok, "To"),
            call_id: header(invite, "Call-ID"),
            caller: (call.src, contact(invite)),
            pbx: (pbx, contact(ok)),
            caller_cseq: cseq(invite),
            pbx_cseq: 0,
        }));
        cx.io.arm_call(deadline, id, CallTimer::SessionExpired);
    }

    /// A request inside call `id`'s dialog passes: note its CSeq by the side it came from.
    pub(super) fn session_request(&mut self, id: u64, msg: &SipMessage) {
        let Some(s) = self.get_mut(id).and_then(|c| c.session.as_deref_mut()) else {
            return;
        };
        let n = cseq(msg);
        if msg.header("From").and_then(tag) == tag(&s.from) {
            s.caller_cseq = s.caller_cseq.max(n);
        } else {
            s.pbx_cseq = s.pbx_cseq.max(n);
        }
    }

    /// A re-INVITE or UPDATE of call `id` was answered 2xx: the session is refreshed, for the
    /// interval the answer gives (or the last one).
    pub(super) fn session_refreshed(&mut self, cx: &mut Cx<'_>, id: u64, ok: &SipMessage) {
        let Some(s) = self.get_mut(id).and_then(|c| c.session.as_deref_mut()) else {
            return;
        };
        s.interval_ms = interval_ms(ok).unwrap_or(s.interval_ms);
        s.deadline = cx.now + s.interval_ms;
        let deadline = s.deadline;
        cx.io.arm_call(deadline, id, CallTimer::SessionExpired);
    }

    /// The session timer of call `id` fired: over if it was not refreshed since.
    pub(super) fn session_due(&mut self, cx: &mut Cx<'_>, id: u64) {
        let Some(s) = self.get(id).and_then(|c| c.session.as_deref()) else {
            return;
        };
        if s.deadline > cx.now {
            return; // refreshed: a later timer is armed
        }
        let bye = |from: &str, to: &str, cseq: u32, target: &str| {
            let mut m = SipMessage::request(Method::Bye, target.to_string());
            m.push("Max-Forwards", "70");
            m.push("From", from.to_string());
            m.push("To", to.to_string());
            m.push("Call-ID", s.call_id.clone());
            m.push("CSeq", format!("{} BYE", cseq + 1));
            m.push("Reason", "SIP;cause=408;text=\"Session expired (RFC 4028)\"");
            m
        };
        let to_pbx = (s.pbx.0, bye(&s.from, &s.to, s.caller_cseq, &s.pbx.1));
        let to_caller = (s.caller.0, bye(&s.to, &s.from, s.pbx_cseq, &s.caller.1));
        tracing::warn!(call_id = %s.call_id, interval_s = s.interval_ms / 1000, "session not refreshed in time: BYE to both sides, slot given back");
        for (dest, m) in [to_pbx, to_caller] {
            if m.uri().is_some_and(|u| !u.is_empty()) {
                cx.start_client(m, dest, Owner::Notice);
            }
        }
        self.finish(cx, id, Disposition::Answered, Cause::SessionExpired, None, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_header_delta_seconds() {
        let m = |h: &str| {
            hatrunk_sip::parse::parse(format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{h}Content-Length: 0\r\n\r\n").as_bytes(), true).expect("parse")
        };
        assert_eq!(interval_ms(&m("Session-Expires: 90;refresher=uac\r\n")), Some(90_000));
        assert_eq!(interval_ms(&m("x: 1800\r\n")), Some(1_800_000), "the compact form");
        assert_eq!(interval_ms(&m("")), None);
        assert_eq!(interval_ms(&m("Session-Expires: 0\r\n")), None);
        assert_eq!(interval_ms(&m("Session-Expires: soon\r\n")), None);
        assert_eq!(tag("<sip:a@b>;tag=xy;foo=1"), Some("xy"));
    }
}

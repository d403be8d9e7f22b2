//! An attempt's INVITE as the account it goes to wants it (`core::rewrite` holds the rules): the
//! called number rewritten in the Request-URI and To, the headers the PBX must not see removed,
//! Diversion or History-Info on a call failed over to the Secondary, and the trunk's session timer
//! asked for when the caller asked for none. Only the node delivering to the account applies them:
//! a call forwarded to another member (Advanced HA) travels as the caller sent it.
//!
//! In-dialog requests (re-INVITE, BYE) are relayed by their Route set without the call's trunk in
//! hand, so `remove_headers` covers the dialog-creating INVITE only (`docs/call-path.md`).

use hatrunk_core::cdr::Direction;
use hatrunk_core::rewrite::divert_header;
use hatrunk_core::trunk::{normalize_number, Role};
use hatrunk_sip::headers::{addr_uri, SipUri};
use hatrunk_sip::SipMessage;

use super::calls::Call;

/// The called number as account `role`'s side gets it: toward a PBX its account's `number_*`
/// rule, toward the carrier the `outbound_number_*` rule of the account the PBX called through.
pub(super) fn dialled(call: &Call, role: Role) -> String {
    let rule = match call.direction {
        Direction::Inbound => call.trunk.account(role).map(|a| &a.to_pbx),
        Direction::Outbound => call.via_account.and_then(|r| call.trunk.account(r)).map(|a| &a.to_carrier),
    };
    rule.map_or_else(|| call.number.clone(), |r| r.apply(&call.number))
}

/// Place the rules of the account `role` in `m`, the INVITE of the call's next attempt, sent to `ruri`.
pub(super) fn apply(call: &Call, role: Role, m: &mut SipMessage, ruri: &str) {
    let number = dialled(call, role);
    if number != call.number {
        if let Some(to) = m.header("To").map(str::to_string) {
            let same =
                SipUri::parse(addr_uri(&to)).ok().and_then(|u| u.user_unescaped()).is_some_and(|u| normalize_number(&u) == call.number);
            if same {
                m.set("To", rewrite_user(&to, &number));
            }
        }
    }
    if let Some(s) = call.trunk.session_expires_s {
        if m.header("Session-Expires").is_none() && m.header("x").is_none() {
            // RFC 4028 section 8: a proxy may ask for a timer; never below the caller's Min-SE
            let min_se = m.header("Min-SE").and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok()).unwrap_or(0);
            m.set("Session-Expires", s.max(min_se).to_string());
        }
    }
    if call.direction != Direction::Inbound {
        return;
    }
    let Some(account) = call.trunk.account(role) else {
        return;
    };
    for h in &account.remove_headers {
        m.remove_all(h);
    }
    if role != Role::Secondary {
        return;
    }
    let primary = call.attempts.iter().rev().find(|a| !a.forward && a.rec.account == Some(Role::Primary));
    let Some((target, outcome)) = primary.and_then(|a| Some((a.rec.target.as_str(), a.rec.outcome()?))) else {
        return;
    };
    let prior = m.headers_named("History-Info").map(|v| v.split(',').count()).sum();
    if let Some((name, value)) = divert_header(account.diversion, target, ruri, outcome, prior) {
        match name {
            "History-Info" => m.push(name, value),
            _ => m.push_front(name, value), // Diversion: the newest diversion first (RFC 5806)
        }
    }
}

/// `header` (a From or To) with its URI's user part replaced.
pub(super) fn rewrite_user(header: &str, user: &str) -> String {
    let uri = addr_uri(header);
    let Ok(u) = SipUri::parse(uri) else {
        return header.to_string();
    };
    let port = u.port.map(|p| format!(":{p}")).unwrap_or_default();
    let new = format!("{}:{user}@{}{port}{}", u.scheme, u.host, u.params);
    header.replacen(uri, &new, 1)
}

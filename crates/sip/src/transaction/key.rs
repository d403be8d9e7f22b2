//! Which server transaction a request belongs to (RFC 3261 section 17.2.3). A branch with the magic
//! cookie names the transaction together with the top Via's sent-by and the method; without it (an
//! RFC 2543 sender) the request's identifying headers do. ACK is matched to the INVITE it
//! acknowledges; CANCEL has a transaction of its own whose INVITE is [`TxKey::with_method`].

use crate::headers::{param, Via};
use crate::{Method, SipMessage};

/// A server transaction's key. Typed so that a CANCEL finds its INVITE by changing one field, not by
/// rewriting a formatted string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxKey {
    Rfc3261 {
        branch: String,
        host: String,
        port: u16,
        method: String,
        /// Not part of RFC 3261's key: a sender that reuses a branch for a different request (RFC
        /// 4475's messages do) must not have its new request taken for a retransmission.
        call_id: String,
    },
    /// RFC 2543 matching: Call-ID, CSeq number, From tag and the whole top Via.
    Rfc2543 { call_id: String, cseq: String, from_tag: String, via: String, method: String },
}

/// The empty key: a request the parser accepts always has a Via and a Call-ID, so this names no
/// transaction; it lets a holder give its key away (`std::mem::take`) without an `Option`.
impl Default for TxKey {
    fn default() -> TxKey {
        TxKey::Rfc2543 { call_id: String::new(), cseq: String::new(), from_tag: String::new(), via: String::new(), method: String::new() }
    }
}

impl TxKey {
    /// The key of the transaction `msg` (a request) belongs to.
    pub fn of(msg: &SipMessage) -> TxKey {
        let method = match msg.method() {
            Some(Method::Ack) => "INVITE",
            Some(m) => m.as_str(),
            None => "",
        }
        .to_string();
        let call_id = msg.header("Call-ID").unwrap_or("").to_string();
        let top = msg.header("Via");
        match top.and_then(|v| Via::parse(v).ok()) {
            Some(v) if v.branch().is_some_and(|b| b.starts_with("z9hG4bK")) => TxKey::Rfc3261 {
                branch: v.branch().unwrap_or("").to_string(),
                host: v.host.clone(),
                port: v.port.unwrap_or(0),
                method,
                call_id,
            },
            _ => TxKey::Rfc2543 {
                call_id,
                cseq: msg.header("CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("").to_string(),
                from_tag: param(msg.header("From").unwrap_or(""), "tag").unwrap_or("").to_string(),
                via: top.unwrap_or("").to_string(),
                method,
            },
        }
    }

    /// The same key for another method: a CANCEL's key with `INVITE` is the INVITE it cancels.
    pub fn with_method(&self, m: &str) -> TxKey {
        let mut k = self.clone();
        match &mut k {
            TxKey::Rfc3261 { method, .. } | TxKey::Rfc2543 { method, .. } => *method = m.to_string(),
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn req(method: &str, via: &str, call_id: &str) -> SipMessage {
        let text = format!(
            "{method} sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:c@d>;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: {call_id}\r\n\
             CSeq: 7 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes(), true).expect("parses")
    }

    #[test]
    fn ack_joins_its_invite_and_cancel_finds_it() {
        let via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa1";
        let invite = TxKey::of(&req("INVITE", via, "c1"));
        assert_eq!(TxKey::of(&req("ACK", via, "c1")), invite);
        let cancel = TxKey::of(&req("CANCEL", via, "c1"));
        assert_ne!(cancel, invite);
        assert_eq!(cancel.with_method("INVITE"), invite);
        // same branch, another Call-ID or sent-by: another transaction
        assert_ne!(TxKey::of(&req("INVITE", via, "c2")), invite);
        assert_ne!(TxKey::of(&req("INVITE", "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKa1", "c1")), invite);
    }

    #[test]
    fn a_branch_without_the_cookie_is_matched_the_rfc_2543_way() {
        let via = "SIP/2.0/UDP 10.0.0.1:5070;branch=old1";
        let invite = TxKey::of(&req("INVITE", via, "c1"));
        assert!(matches!(invite, TxKey::Rfc2543 { .. }));
        assert_eq!(TxKey::of(&req("ACK", via, "c1")), invite);
        assert_eq!(TxKey::of(&req("CANCEL", via, "c1")).with_method("INVITE"), invite);
        assert_ne!(TxKey::of(&req("INVITE", "SIP/2.0/UDP 10.0.0.1:5070;branch=old2", "c1")), invite);
    }
}

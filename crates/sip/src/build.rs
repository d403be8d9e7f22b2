//! The messages a transaction-stateful proxy makes itself rather than relays: responses, the
//! hop-by-hop ACK for a non-2xx final response (RFC 3261 section 17.1.1.3), CANCEL (section 9.1),
//! answers to requests that could not be parsed, the stateless refusal sent from the socket when the
//! node is far behind, and the `received`/`rport` stamp on a request's top Via (RFC 3581).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::headers::{param, Via};
use crate::message::reason_phrase as reason;
use crate::parse::{canonical_name, parse};
use crate::{Method, SipMessage};

/// A response to `req` with our reason phrase.
pub fn response(req: &SipMessage, code: u16, to_tag: Option<&str>) -> SipMessage {
    req.make_response(code, reason(code), to_tag)
}

/// ACK for a non-2xx final response to the INVITE we sent as `request` (same branch, same R-URI,
/// To from the response).
pub fn ack_for(request: &Bytes, resp: &SipMessage) -> Bytes {
    let Ok(inv) = parse(request, true) else {
        return Bytes::new();
    };
    let mut ack = SipMessage::request(Method::Ack, inv.uri().unwrap_or(""));
    if let Some(v) = inv.header("Via") {
        ack.push("Via", v);
    }
    for h in ["Route"] {
        for v in inv.headers_named(h) {
            ack.push(h, v);
        }
    }
    ack.push("Max-Forwards", "70");
    copy(&inv, &mut ack, "From");
    if let Some(to) = resp.header("To") {
        ack.push("To", to);
    }
    copy(&inv, &mut ack, "Call-ID");
    let n = inv.header("CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("1");
    ack.push("CSeq", format!("{n} ACK"));
    ack.to_bytes()
}

/// CANCEL for the INVITE we sent as `request` (RFC 3261 section 9.1: same top Via, R-URI, Call-ID,
/// From, To and CSeq number).
pub fn cancel_for(request: &Bytes) -> Option<SipMessage> {
    let inv = parse(request, true).ok()?;
    let mut c = SipMessage::request(Method::Cancel, inv.uri().unwrap_or(""));
    c.push("Via", inv.header("Via")?);
    for v in inv.headers_named("Route") {
        c.push("Route", v);
    }
    c.push("Max-Forwards", "70");
    for h in ["From", "To", "Call-ID"] {
        copy(&inv, &mut c, h);
    }
    let n = inv.header("CSeq").and_then(|c| c.split_whitespace().next()).unwrap_or("1");
    c.push("CSeq", format!("{n} CANCEL"));
    c.push("Reason", "SIP;cause=487;text=\"Request Terminated\"");
    Some(c)
}

fn copy(from: &SipMessage, to: &mut SipMessage, h: &str) {
    if let Some(v) = from.header(h) {
        to.push(h, v);
    }
}

/// The reply to a request we could not parse: status line plus whatever Via/From/To/Call-ID/CSeq
/// lines can be read, so the sender can match it. `None` for responses and unaddressable garbage.
pub fn error_reply(bytes: &[u8], status: u16, why: &str) -> Option<SipMessage> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches(['\r', '\n']);
    if text.starts_with("SIP/") {
        return None;
    }
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut r = SipMessage::response(status, reason(status));
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = canonical_name(name.trim());
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&&*name) && value.len() < 1024 {
            r.push(&name, value.trim());
        }
    }
    r.header("Via")?;
    let why: String = why.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(120).collect();
    r.push("Warning", format!("399 hatrunk \"{}\"", why.replace('"', "'")));
    Some(r)
}

/// The stateless 503 the transport sends for a new request when the node is far behind
/// ([`crate::transport::Transports::set_drop_backlog`]), from the raw bytes: its To tag lets the
/// transport absorb the ACK, and Retry-After asks the sender to wait.
pub fn far_behind_refusal(bytes: &[u8]) -> Option<Bytes> {
    let mut r = error_reply(bytes, 503, "overloaded")?;
    let to = r.header("To")?.to_string();
    if param(&to, "tag").is_none() {
        r.set("To", format!("{to};tag={}", crate::transport::REFUSAL_TAG));
    }
    r.push("Retry-After", "5");
    Some(r.to_bytes())
}

/// RFC 3581 (and RFC 3261 section 18.2.1): record in the top Via where the request really came from,
/// `received` when the sent-by host differs and `rport` filled in when the sender asked for it.
pub fn stamp_received(msg: &mut SipMessage, from: SocketAddr) {
    let Some(top) = msg.headers.iter_mut().find(|(n, _)| n == "Via") else {
        return;
    };
    let Ok(via) = Via::parse(&top.1) else { return };
    let ip = from.ip().to_string();
    let mut v = top.1.clone();
    if via.host != ip && param(&via.params, "received").is_none() {
        v.push_str(&format!(";received={ip}"));
    }
    if param(&via.params, "rport") == Some("") {
        v = v.replacen(";rport", &format!(";rport={}", from.port()), 1);
    }
    top.1 = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_far_behind_refusal_is_a_503_the_caller_can_match_and_ack() {
        let invite = b"INVITE sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKr1\r\n\
            From: <sip:c@10.9.9.9>;tag=f1\r\nTo: <sip:1000@10.0.0.1>\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\n\
            Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let r = parse(&far_behind_refusal(invite).expect("a reply"), true).expect("parses");
        assert_eq!(r.code(), Some(503));
        assert_eq!(r.header("Via"), Some("SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKr1"));
        assert_eq!(r.header("To"), Some("<sip:1000@10.0.0.1>;tag=hatrunk-refused"));
        assert_eq!(r.header("Retry-After"), Some("5"));
        assert_eq!(r.header("Call-ID"), Some("r1"));
        // a request already in a dialog keeps its tag; garbage gets nothing
        let reinvite = String::from_utf8_lossy(invite).replace("To: <sip:1000@10.0.0.1>", "To: <sip:1000@10.0.0.1>;tag=p");
        let r = parse(&far_behind_refusal(reinvite.as_bytes()).expect("a reply"), true).expect("parses");
        assert_eq!(r.header("To"), Some("<sip:1000@10.0.0.1>;tag=p"));
        assert!(far_behind_refusal(b"\x00garbage").is_none());
    }

    #[test]
    fn the_top_via_says_where_the_request_came_from() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP pbx.example;rport;branch=z9hG4bKs\r\n\
            Via: SIP/2.0/UDP 10.0.0.9\r\nFrom: <sip:p@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: s\r\nMax-Forwards: 70\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let mut m = parse(text.as_bytes(), true).expect("parses");
        stamp_received(&mut m, "192.0.2.7:5071".parse().expect("addr"));
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP pbx.example;rport=5071;branch=z9hG4bKs;received=192.0.2.7"));
        assert_eq!(m.headers_named("Via").nth(1), Some("SIP/2.0/UDP 10.0.0.9"));
        // sent from where it says, without rport: untouched
        let mut m = parse(text.replace("pbx.example;rport;", "192.0.2.7:5071;").as_bytes(), true).expect("parses");
        stamp_received(&mut m, "192.0.2.7:5071".parse().expect("addr"));
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bKs"));
    }

    #[test]
    fn error_reply_keeps_addressing_headers() {
        let bad = b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n";
        let r = error_reply(bad, 400, "CSeq \"mismatch\"").expect("reply");
        assert_eq!(r.code(), Some(400));
        assert_eq!(r.header("Via"), Some("SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx"));
        assert!(error_reply(b"SIP/2.0 999 x\r\n\r\n", 400, "x").is_none());
        assert!(error_reply(b"\x00\x01garbage", 400, "x").is_none());
    }
}

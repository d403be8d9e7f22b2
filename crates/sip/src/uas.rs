//! The answers of a minimal user agent server (a PBX that picks up), shared by the demo's PBXes and
//! the benchmarks': an INVITE is answered with the code the caller chooses (a 2xx creates the
//! dialog: the Record-Route comes back, with a Contact and an optional SDP body), BYE and OPTIONS
//! with 200, anything else (ACK, CANCEL) with nothing. Pure: the caller owns the socket.
//! End-to-end tests use SIPp instead (the real peer the product must work with), and the
//! simulation its scripted PBX (silence, codes, crashes on turmoil's sockets).

use bytes::Bytes;

use crate::message::reason_phrase;
use crate::{Method, SipMessage};

/// The answer to `req`: `invite_code` for an INVITE, 200 for BYE and OPTIONS. `contact` is the
/// `host:port` the dialog's requests come to, `tag` the To tag, `sdp` the 2xx's body if any.
pub fn answer(req: &SipMessage, invite_code: u16, contact: &str, tag: &str, sdp: Option<&'static str>) -> Option<SipMessage> {
    let code = match req.method()? {
        Method::Invite => invite_code,
        Method::Bye | Method::Options => 200,
        _ => return None,
    };
    let mut r = req.make_response(code, reason_phrase(code), Some(tag));
    if req.method() == Some(&Method::Invite) && (200..300).contains(&code) {
        // a dialog-creating 2xx carries the Record-Route back (RFC 3261 section 12.1.1)
        for rr in req.headers_named("Record-Route") {
            r.push("Record-Route", rr);
        }
        r.push("Contact", format!("<sip:pbx@{contact}>"));
        if let Some(sdp) = sdp {
            r.push("Content-Type", "application/sdp");
            r.body = Bytes::from_static(sdp.as_bytes());
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn req(method: &str) -> SipMessage {
        let text = format!(
            "{method} sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKu1\r\n\
             Record-Route: <sip:10.0.0.9:5060;lr>\r\nFrom: <sip:c@h>;tag=f\r\nTo: <sip:1000@h>\r\nCall-ID: u1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes(), true).expect("parses")
    }

    #[test]
    fn a_2xx_to_an_invite_makes_the_dialog_and_a_failure_does_not() {
        let ok = answer(&req("INVITE"), 200, "10.0.0.1:5060", "p1", Some("v=0\r\n")).expect("an answer");
        assert_eq!(ok.code(), Some(200));
        assert_eq!(ok.header("Record-Route"), Some("<sip:10.0.0.9:5060;lr>"));
        assert_eq!(ok.header("Contact"), Some("<sip:pbx@10.0.0.1:5060>"));
        assert!(ok.header("To").is_some_and(|t| t.ends_with(";tag=p1")));
        assert_eq!(&ok.body[..], b"v=0\r\n");
        let busy = answer(&req("INVITE"), 503, "10.0.0.1:5060", "p1", Some("v=0\r\n")).expect("an answer");
        assert_eq!((busy.code(), busy.header("Contact"), busy.body.is_empty()), (Some(503), None, true));
        assert_eq!(answer(&req("BYE"), 503, "x", "p", None).and_then(|r| r.code()), Some(200));
        assert_eq!(answer(&req("OPTIONS"), 503, "x", "p", None).and_then(|r| r.code()), Some(200));
        assert!(answer(&req("CANCEL"), 200, "x", "p", None).is_none());
    }
}

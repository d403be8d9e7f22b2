//! Bytes -> [`SipMessage`], normalising what rsip cannot (RFC 3261 section 7.3): compact header
//! names expanded, folded lines joined, comma-joined Via/Route/Record-Route/Contact split into one
//! entry each, and the checks whose failure earns a 400 (or 416/505), so that nothing malformed reaches
//! the proxy. `datagram` says whether Content-Length may be absent (UDP) and truncates the body to it.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::SipError;
use crate::headers::{addr_uri, cseq_parts, is_token_byte, split_list, SipUri, Via};
use crate::message::{header_name, HeaderName, Method, SipMessage, StartLine};

/// At most this many header lines; more is a flood, not a message.
pub const MAX_HEADERS: usize = 256;

/// The compact forms of RFC 3261 section 7.3.3 (and of the extensions that define one).
const COMPACT: &[(u8, &str)] = &[
    (b'i', "Call-ID"),
    (b'm', "Contact"),
    (b'e', "Content-Encoding"),
    (b'l', "Content-Length"),
    (b'c', "Content-Type"),
    (b'f', "From"),
    (b's', "Subject"),
    (b'k', "Supported"),
    (b't', "To"),
    (b'v', "Via"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b'u', "Allow-Events"),
    (b'x', "Session-Expires"),
];

/// The canonical spelling of a header name: compact forms expanded, known names in their usual
/// case (both static, no allocation); any other name verbatim.
pub fn canonical_name(name: &str) -> HeaderName {
    if let [b] = name.as_bytes() {
        let b = b.to_ascii_lowercase();
        if let Some((_, long)) = COMPACT.iter().find(|(c, _)| *c == b) {
            return Cow::Borrowed(long);
        }
    }
    header_name(name)
}

/// Parse one whole message (a datagram, or a frame cut by [`crate::framing`]).
pub fn parse(buf: &[u8], datagram: bool) -> Result<SipMessage, SipError> {
    // leading CRLFs are keep-alives (RFC 5626) or stray line ends, not part of the message
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n').ok_or_else(|| SipError::bad("empty message"))?;
    let buf = &buf[start..];
    let (head_end, body_start) = find_head_end(buf).ok_or_else(|| SipError::bad("no blank line after the headers"))?;
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| SipError::bad("headers are not UTF-8"))?;
    let mut lines = Unfold { raw: head.split('\n').peekable() };
    let first = lines.next().ok_or_else(|| SipError::bad("no start line"))?;
    let start_line = parse_start_line(&first)?;
    let mut msg = SipMessage { start: start_line, headers: Vec::with_capacity(16), body: Bytes::new() };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| SipError::bad(format!("header line without ':': {line:?}")))?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(SipError::bad(format!("bad header name {name:?}")));
        }
        let name = canonical_name(name);
        let value = value.trim();
        let list = matches!(&*name, "Via" | "Route" | "Record-Route") || (name == "Contact" && value != "*");
        if !list {
            msg.headers.push((name, value.to_string()));
        } else if !value.contains(',') {
            // one value, the usual case: no list to split
            if !value.is_empty() {
                msg.headers.push((name, value.to_string()));
            }
        } else {
            for v in split_list(value) {
                msg.headers.push((name.clone(), v.to_string()));
            }
        }
        if msg.headers.len() > MAX_HEADERS {
            return Err(SipError::bad("too many headers"));
        }
    }
    let rest = &buf[body_start..];
    let body_len = match msg.header("Content-Length") {
        Some(v) => {
            let n: usize = v.parse().map_err(|_| SipError::bad(format!("Content-Length {v:?}")))?;
            if n > rest.len() {
                return Err(SipError::bad(format!("Content-Length {n} but only {} bytes of body", rest.len())));
            }
            n
        }
        None if datagram => rest.len(),
        None => return Err(SipError::bad("Content-Length is required on streams")),
    };
    msg.body = Bytes::copy_from_slice(&rest[..body_len]);
    validate(&msg)?;
    Ok(msg)
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    // a message whose head is complete but has no body may end in one CRLF pair only on a datagram
    buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2))
}

/// The head's logical lines: continuation lines (leading SP/HT) joined to the line before with one
/// space. A line that is not folded is borrowed from the head.
struct Unfold<'a> {
    raw: std::iter::Peekable<std::str::Split<'a, char>>,
}

impl<'a> Iterator for Unfold<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        let cut = |raw: &'a str| raw.strip_suffix('\r').unwrap_or(raw);
        let mut line = Cow::Borrowed(cut(self.raw.next()?));
        while let Some(more) = self.raw.next_if(|raw| raw.starts_with([' ', '\t'])) {
            let joined = line.to_mut();
            joined.push(' ');
            joined.push_str(cut(more).trim_start());
        }
        Some(line)
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let (ver, rest) = rest.split_once(' ').ok_or_else(|| SipError::bad("status line"))?;
        if ver != "2.0" {
            return Err(SipError::bad(format!("response version SIP/{ver}")));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 =
            code.parse().ok().filter(|c| (100..=699).contains(c)).ok_or_else(|| SipError::bad(format!("status code {code:?}")))?;
        return Ok(StartLine::Response { code, reason: reason.to_string() });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces (RFC 3261 section 7.1)
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(SipError::bad(format!("request line {line:?}")));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !method.bytes().all(is_token_byte) {
        return Err(SipError::bad(format!("method {method:?}")));
    }
    if version != "SIP/2.0" {
        if version.starts_with("SIP/") {
            return Err(SipError::Malformed { status: 505, reason: format!("version {version}") });
        }
        return Err(SipError::bad(format!("version {version:?}")));
    }
    if uri.contains(['<', '>', '"']) || !uri.contains(':') {
        return Err(SipError::bad(format!("Request-URI {uri:?}")));
    }
    Ok(StartLine::Request { method: Method::parse(method), uri: uri.to_string() })
}

/// Checks shared by requests and responses; request-only checks are flagged as such. One pass
/// over the headers: this runs on every message the node receives. Names are compared exactly:
/// [`canonical_name`] gave every name checked here its canonical spelling (all are known names).
fn validate(msg: &SipMessage) -> Result<(), SipError> {
    // From, To, Call-ID, CSeq, Max-Forwards, Content-Length: at most one each (RFC 3261 7.3.1, 20)
    const SINGLE: [&str; 6] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length"];
    let mut singles = [0u8; SINGLE.len()];
    let (mut vias, mut cseq) = (0usize, "");
    for (name, v) in &msg.headers {
        let name: &str = name;
        if let Some(i) = SINGLE.iter().position(|s| *s == name) {
            singles[i] += 1;
            if singles[i] > 1 {
                return Err(SipError::bad(format!("more than one {name}")));
            }
        }
        match name {
            "Via" => {
                vias += 1;
                Via::check(v)?;
            }
            "CSeq" => cseq = v,
            "Max-Forwards" => {
                v.parse::<u8>().map_err(|_| SipError::bad(format!("Max-Forwards {v:?}")))?;
            }
            "Date" if !v.ends_with("GMT") => return Err(SipError::bad("Date must be in GMT (RFC 3261 section 20.17)")),
            "From" | "To" | "Contact" | "Route" | "Record-Route" => check_address(name, v)?,
            _ => {}
        }
    }
    if vias == 0 {
        return Err(SipError::bad("missing Via"));
    }
    for (i, h) in SINGLE[..4].iter().enumerate() {
        if singles[i] == 0 {
            return Err(SipError::bad(format!("missing {h}")));
        }
    }
    let (_, cseq_method) = cseq_parts(cseq)?;
    if let StartLine::Request { method, uri } = &msg.start {
        if cseq_method != method.as_str() {
            return Err(SipError::bad(format!("CSeq method {cseq_method} does not match {}", method.as_str())));
        }
        if uri.starts_with("sip:") || uri.starts_with("sips:") {
            SipUri::check(uri)?;
        } else if !uri.starts_with("tel:") {
            return Err(SipError::Malformed { status: 416, reason: format!("unsupported URI scheme in {uri:?}") });
        }
    }
    Ok(())
}

/// A From, To, Contact, Route or Record-Route value, in one scan: quotes balanced (a backslash
/// escapes inside quotes), no LWS just inside `<...>`, no URI headers in an addr-spec (RFC 4475
/// 3.1.2.16, 3.1.2.15), brackets balanced and at most one pair except in Contact, and a URI.
fn check_address(h: &str, v: &str) -> Result<(), SipError> {
    let b = v.as_bytes();
    let (mut quoted, mut escaped, mut open, mut close, mut spaced, mut question) = (false, false, 0usize, 0usize, false, false);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'<' => {
                open += 1;
                spaced |= b.get(i + 1) == Some(&b' ');
            }
            b'>' => {
                close += 1;
                spaced |= i > 0 && b[i - 1] == b' ';
            }
            b'?' => question = true,
            _ => {}
        }
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ => {}
        }
    }
    if quoted {
        return Err(SipError::bad(format!("unbalanced quotes in {h}")));
    }
    if spaced || (open == 0 && question) {
        return Err(SipError::bad(format!("bad address in {h}: {v:?}")));
    }
    if open != close || open > 1 && h != "Contact" {
        return Err(SipError::bad(format!("unbalanced angle brackets in {h}")));
    }
    if v != "*" {
        let uri = addr_uri(v);
        if uri.is_empty() || uri.contains(char::is_whitespace) {
            return Err(SipError::bad(format!("bad address in {h}: {v:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:6561230000@127.0.0.1:5060 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2\r\n ;branch=z9hG4bKb\r\nf: <sip:a@b>;tag=1\r\nt: <sip:6561230000@h>\r\ni: abc\r\nCSeq: 1 INVITE\r\nl: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn normalises_compact_folded_and_lists() {
        let m = parse(INVITE.as_bytes(), true).expect("parse");
        let vias: Vec<&str> = m.headers_named("Via").collect();
        assert_eq!(vias, vec!["SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa", "SIP/2.0/UDP 10.0.0.2 ;branch=z9hG4bKb"]);
        assert_eq!(m.header("Call-ID"), Some("abc"));
        assert_eq!(&m.body[..], b"v=0\r");
        let again = parse(&m.to_bytes(), false).expect("round trip");
        assert_eq!(again, m);
    }

    #[test]
    fn malformed_is_refused() {
        for (bad, status) in [
            (INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"), 400),
            (INVITE.replace("SIP/2.0\r\nv:", "SIP/3.0\r\nv:"), 505),
            (INVITE.replace("l: 4", "l: 400"), 400),
            (INVITE.replace("i: abc\r\n", ""), 400),
            (INVITE.replace("sip:6561230000@127.0.0.1:5060", "foo:bar"), 416),
            (INVITE.replace("INVITE sip", "INVITE  sip"), 400),
        ] {
            match parse(bad.as_bytes(), true) {
                Err(SipError::Malformed { status: s, .. }) => assert_eq!(s, status, "{bad}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    /// The checks compare canonical names, so any spelling of a checked header is checked.
    #[test]
    fn checks_see_every_spelling_of_a_name() {
        for bad in [
            INVITE.replace("t: <sip:6561230000@h>", "t: <sip:6561230000@h>\r\nTO: <sip:x@h>"),
            INVITE.replace("CSeq: 1 INVITE", "cseq: 1 BYE"),
            INVITE.replace("f: <sip:a@b>;tag=1", "FROM: \"a <sip:a@b>;tag=1"),
            INVITE.replace("i: abc", "date: Mon, 1 Dec 2026 10:00:00 CET\r\ni: abc"),
        ] {
            assert!(matches!(parse(bad.as_bytes(), true), Err(SipError::Malformed { status: 400, .. })), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes, true);
            let _ = parse(&bytes, false);
        }

        #[test]
        fn never_panics_on_mutated_invite(pos in 0usize..200, b in proptest::num::u8::ANY) {
            let mut m = INVITE.as_bytes().to_vec();
            let p = pos % m.len();
            m[p] = b;
            let _ = parse(&m, true);
        }
    }
}

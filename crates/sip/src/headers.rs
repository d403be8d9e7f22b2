//! Typed views of the header values a proxy reads: Via, name-addr (From/To/Contact/Route), CSeq and
//! SIP URIs (RFC 3261 section 20 and 25.1). Views borrow or copy small pieces; nothing here allocates
//! a whole message.

use crate::error::SipError;

/// `Via: SIP/2.0/UDP host:port;branch=...;received=...;rport=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: String,
}

impl Via {
    pub fn parse(v: &str) -> Result<Via, SipError> {
        let (transport, host, port, params) = Via::parts(v)?;
        Ok(Via { transport: transport.to_ascii_uppercase(), host: host.to_string(), port, params: params.to_string() })
    }

    /// What [`Via::parse`] refuses, without building the value (the parser checks every Via).
    pub fn check(v: &str) -> Result<(), SipError> {
        Via::parts(v).map(|_| ())
    }

    /// (transport, host, port, params), borrowed from `v`.
    fn parts(v: &str) -> Result<(&str, &str, Option<u16>, &str), SipError> {
        let v = v.trim();
        // sent-protocol is "SIP / 2.0 / UDP", LWS allowed around the slashes (RFC 3261 section 25.1)
        let second = v.match_indices('/').nth(1).map(|(i, _)| i).ok_or_else(|| SipError::bad("Via without protocol"))?;
        let after = v[second + 1..].trim_start();
        let tlen = after.find(|c: char| c.is_whitespace()).ok_or_else(|| SipError::bad("Via without sent-by"))?;
        let (transport, rest) = (&after[..tlen], &after[tlen..]);
        let proto = &v[..second];
        let mut parts = proto.split('/').map(str::trim);
        let (name, ver) = (parts.next(), parts.next());
        if !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP")) || ver != Some("2.0") || transport.is_empty() {
            return Err(SipError::bad(format!("Via protocol {proto:?}")));
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        let (host, port) = host_port(sent_by)?;
        Ok((transport, host, port, params))
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }
}

/// Split `host[:port]` (IPv6 in brackets).
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), SipError> {
    host_port(s).map(|(h, p)| (h.to_string(), p))
}

/// [`split_host_port`], borrowing the host.
fn host_port(s: &str) -> Result<(&str, Option<u16>), SipError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| SipError::bad("unclosed IPv6 reference"))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
        return Err(SipError::bad(format!("bad host {s:?}")));
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.trim().parse::<u16>().map_err(|_| SipError::bad(format!("bad port in {s:?}")))?),
    };
    Ok((host, port))
}

/// The value of `;name=value` (or `Some("")` for a bare `;name`) in a parameter list. Parameters
/// inside `<...>` (URI parameters of a name-addr) are not header parameters and are skipped.
pub fn param<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let start = match s.rfind('>') {
        Some(i) => i + 1,
        None => 0,
    };
    let s = &s[start..];
    s.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// The URI inside a name-addr or addr-spec (`"Bob" <sip:b@h>;tag=1` or `sip:b@h;tag=1`).
pub fn addr_uri(v: &str) -> &str {
    if let (Some(a), Some(b)) = (v.find('<'), v.rfind('>')) {
        if a < b {
            return v[a + 1..b].trim();
        }
    }
    v.split(';').next().unwrap_or("").trim()
}

/// `CSeq: 4711 INVITE`
pub fn parse_cseq(v: &str) -> Result<(u32, String), SipError> {
    cseq_parts(v).map(|(n, m)| (n, m.to_string()))
}

/// [`parse_cseq`], borrowing the method.
pub(crate) fn cseq_parts(v: &str) -> Result<(u32, &str), SipError> {
    let mut it = v.split_whitespace();
    let (n, m) = (it.next(), it.next());
    if it.next().is_some() {
        return Err(SipError::bad("CSeq has extra tokens"));
    }
    let n = n
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n < (1u32 << 31))
        .ok_or_else(|| SipError::bad(format!("CSeq number in {v:?}")))?;
    let m = m.filter(|m| m.bytes().all(is_token_byte)).ok_or_else(|| SipError::bad(format!("CSeq method in {v:?}")))?;
    Ok((n, m))
}

pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A SIP or SIPS URI, enough of it to route on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// `;params` (with the leading `;`), verbatim.
    pub params: String,
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, SipError> {
        let (scheme, user, host, port, params) = SipUri::parts(s)?;
        Ok(SipUri {
            scheme: scheme.to_ascii_lowercase(),
            user: user.map(str::to_string),
            host: host.to_ascii_lowercase(),
            port,
            params: params.to_string(),
        })
    }

    /// What [`SipUri::parse`] refuses, without building the value (the parser checks every
    /// Request-URI).
    pub fn check(s: &str) -> Result<(), SipError> {
        SipUri::parts(s).map(|_| ())
    }

    /// (scheme, user, host, port, params), borrowed from `s`.
    #[allow(clippy::type_complexity)]
    fn parts(s: &str) -> Result<(&str, Option<&str>, &str, Option<u16>, &str), SipError> {
        let (scheme, rest) = s.split_once(':').ok_or_else(|| SipError::bad(format!("URI without scheme: {s:?}")))?;
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            let scheme = scheme.to_ascii_lowercase();
            return Err(SipError::Malformed { status: 416, reason: format!("unsupported URI scheme {scheme:?}") });
        }
        if rest[rest.rfind('@').map_or(0, |i| i + 1)..].contains('?') {
            // headers in a Request-URI or Contact are not allowed (RFC 3261 section 19.1.5)
            return Err(SipError::bad("URI carries headers"));
        }
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (host, port) = host_port(hostport)?;
        let user = userinfo.map(|u| u.split(':').next().unwrap_or(""));
        Ok((scheme, user, host, port, params))
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }

    /// The user part with %-escapes decoded (RFC 3261 section 19.1.4 compares unescaped).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split a comma-separated header value, respecting quotes and angle brackets.
pub fn split_list(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    let mut escaped = false;
    for (i, c) in v.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport").expect("via");
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port), ("UDP", "10.0.0.1", Some(5070)));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(param(&v.params, "rport"), Some(""));
        let v = Via::parse("SIP / 2.0 / TCP [::1];branch=x").expect("spaced via");
        assert_eq!((v.transport.as_str(), v.host.as_str()), ("TCP", "::1"));
    }

    #[test]
    fn uris_and_params() {
        let u = SipUri::parse("sip:+6561%30@Example.com:5080;transport=tcp").expect("uri");
        assert_eq!(u.user_unescaped().as_deref(), Some("+65610"));
        assert_eq!((u.host.as_str(), u.port, u.param("transport")), ("example.com", Some(5080), Some("tcp")));
        assert!(matches!(SipUri::parse("foo:bar"), Err(SipError::Malformed { status: 416, .. })));
        assert_eq!(param("\"A;b\" <sip:x;lr>;tag=9", "tag"), Some("9"));
        assert_eq!(param("<sip:x;lr>", "lr"), None);
        assert_eq!(addr_uri("\"Bob\" <sip:b@h>;tag=1"), "sip:b@h");
        assert_eq!(addr_uri("sip:b@h;tag=1"), "sip:b@h");
        assert_eq!(split_list("<sip:a,b>, \"x,y\" <sip:c>,sip:d"), vec!["<sip:a,b>", "\"x,y\" <sip:c>", "sip:d"]);
    }

    #[test]
    fn cseq() {
        assert_eq!(parse_cseq("1 INVITE").ok(), Some((1, "INVITE".into())));
        assert!(parse_cseq("36893488147419103232 INVITE").is_err());
        assert!(parse_cseq("1").is_err());
    }
}

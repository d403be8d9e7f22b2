//! The SIP message model: a start line, ordered headers with canonical names, and a body.
//!
//! Multi-valued routing headers (Via, Route, Record-Route, Contact) are kept one value per entry,
//! so "pop the top Via" is removing one entry. Serialisation always writes a fresh Content-Length.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;

/// A SIP method; unknown methods are kept verbatim (RFC 3261 section 27.4 allows extensions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A header name: the headers a proxy sees on every call are static strings, so that parsing and
/// building a message allocates nothing for them; any other name is kept as it came.
pub type HeaderName = Cow<'static, str>;

/// The canonical spellings of the header names we know (RFC 3261 section 20 and the extensions
/// carriers send). A name that matches one ignoring case is stored as the static string.
pub(crate) const KNOWN_NAMES: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Allow",
    "Supported",
    "User-Agent",
    "Server",
    "Expires",
    "Date",
    "Reason",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Content-Encoding",
    "Content-Disposition",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Authorization",
    "WWW-Authenticate",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Session-Expires",
    "Min-SE",
    "Subject",
    "Event",
    "Allow-Events",
    "Refer-To",
    "Referred-By",
    "Replaces",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Diversion",
    "History-Info",
    "Retry-After",
    "Warning",
    "Timestamp",
    "Organization",
    "Priority",
    "Call-Info",
    "Alert-Info",
    "Error-Info",
    "In-Reply-To",
    "Reply-To",
    "MIME-Version",
    "Content-Language",
    "Min-Expires",
    "RSeq",
    "RAck",
    "Path",
    "Identity",
];

/// `name` as a [`HeaderName`]: a known name spelled in any case becomes its canonical static
/// spelling; any other name is kept verbatim.
pub fn header_name(name: &str) -> HeaderName {
    match KNOWN_NAMES.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_string()),
    }
}

/// One parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    /// (canonical name, value) in wire order.
    pub headers: Vec<(HeaderName, String)>,
    pub body: Bytes,
}

impl SipMessage {
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        SipMessage { start: StartLine::Request { method, uri: uri.into() }, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn response(code: u16, reason: impl Into<String>) -> Self {
        SipMessage { start: StartLine::Response { code, reason: reason.into() }, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn set_uri(&mut self, new: impl Into<String>) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new.into();
        }
    }

    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of header `name` (canonical spelling, compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Add a header after the existing ones.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((header_name(name), value.into()));
    }

    /// Add a header value above every existing value of the same name (e.g. a new top Via).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        let at = self.headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)).unwrap_or(0);
        self.headers.insert(at, (header_name(name), value.into()));
    }

    /// Remove and return the first value of `name`.
    pub fn pop(&mut self, name: &str) -> Option<String> {
        let at = self.headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(self.headers.remove(at).1)
    }

    pub fn remove_all(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Replace every value of `name` with one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(at) => {
                self.headers[at].1 = value;
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    i += 1;
                    i - 1 == at || !n.eq_ignore_ascii_case(name)
                });
            }
            None => self.push(name, value),
        }
    }

    /// Serialise; Content-Length is written from the body, whatever the headers said.
    pub fn to_bytes(&self) -> Bytes {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{} {} SIP/2.0\r\n", method.as_str(), uri);
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }

    /// A response to this request (RFC 3261 section 8.2.6): Via, From, To, Call-ID and CSeq copied;
    /// a To tag added when `to_tag` is given and To has none.
    pub fn make_response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> SipMessage {
        let mut r = SipMessage::response(code, reason);
        for (n, v) in &self.headers {
            let copy = ["Via", "From", "Call-ID", "CSeq"].iter().any(|h| n.eq_ignore_ascii_case(h));
            if copy {
                r.headers.push((n.clone(), v.clone()));
            } else if n.eq_ignore_ascii_case("To") {
                let mut to = v.clone();
                if let Some(tag) = to_tag {
                    if crate::headers::param(&to, "tag").is_none() {
                        to.push_str(";tag=");
                        to.push_str(tag);
                    }
                }
                r.headers.push((n.clone(), to));
            }
        }
        r
    }
}

/// The reason phrase we use for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

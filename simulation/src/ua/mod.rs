//! The simulation's SIP user agents, over turmoil's UDP: the carrier that places calls, the PBXes
//! that take them, and the operator who changes configuration through the admin API.

pub mod carrier;
pub mod operator;
pub mod pbx;

use hatrunk_sip::SipMessage;

pub const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
/// RFC 3261 timers: T1, the T2 cap, and 64*T1 (Timer B/F/H).
pub const T1_MS: u64 = 500;
pub const T2_MS: u64 = 4000;
pub const TIMER_B_MS: u64 = 64 * T1_MS;

/// The next retransmission interval after `gap`.
pub fn backoff(gap: u64) -> u64 {
    (gap * 2).min(T2_MS)
}

/// The branch of the top Via.
pub fn branch(m: &SipMessage) -> String {
    m.header("Via").and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("branch="))).unwrap_or("").to_string()
}

/// The To tag (the PBX's own, on an in-dialog request).
pub fn tag_of(m: &SipMessage) -> String {
    m.header("To").and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("tag="))).unwrap_or("").to_string()
}

/// The sent-by host of the top Via.
pub fn via_host(m: &SipMessage) -> Option<std::net::IpAddr> {
    let v = m.header("Via")?;
    let sent_by = v.split_whitespace().nth(1)?.split(';').next()?;
    let host = sent_by.rsplit_once(':').map(|(h, _)| h).unwrap_or(sent_by);
    host.parse().ok()
}

pub fn cseq_method(m: &SipMessage) -> String {
    m.header("CSeq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("").to_string()
}

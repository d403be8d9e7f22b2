//! The demo's SIP user agents, over real UDP sockets: a carrier that places calls at a fixed rate
//! (INVITE, ACK, BYE after a hold time, following Record-Route) and PBXes that answer, or fail with
//! 503 while told to. Each PBX notes whose Via reached it, which is how the demo sees where calls
//! leave the cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hatrunk_sip::headers::addr_uri;
use hatrunk_sip::parse::parse;
use hatrunk_sip::SipMessage;
use tokio::net::UdpSocket;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// What happened, for the live view and the summary.
#[derive(Default)]
pub struct Stats {
    /// Calls that reached a PBX answer, by the egress node's SIP port, per second of the run.
    pub egress: Vec<HashMap<u16, u32>>,
    pub offered: Vec<u32>,
    pub answered: Vec<u32>,
    pub failed: Vec<u32>,
    /// INVITEs refused by the failing Primary (each one is an Auto Fail-over).
    pub failovers: Vec<u32>,
    pub bye_ok: u32,
    pub bye_failed: u32,
    /// When each offered call got its final answer: (offered at, answered?).
    pub outcomes: Vec<(Duration, bool)>,
}

impl Stats {
    fn bump(v: &mut Vec<u32>, sec: usize) {
        if v.len() <= sec {
            v.resize(sec + 1, 0);
        }
        v[sec] += 1;
    }
}

pub type Shared = Arc<Mutex<Stats>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn sec(t0: Instant) -> usize {
    t0.elapsed().as_secs() as usize
}

/// A PBX on `addr`; fails every INVITE with 503 while `failing` is set.
pub async fn pbx(addr: SocketAddr, failing: Arc<AtomicBool>, stats: Shared, t0: Instant) -> std::io::Result<()> {
    let sock = UdpSocket::bind(addr).await?;
    let mut buf = vec![0u8; 65_536];
    let mut n = 0u64;
    loop {
        let (len, from) = sock.recv_from(&mut buf).await?;
        let Ok(msg) = parse(&buf[..len], true) else { continue };
        let Some(method) = msg.method().map(|m| m.as_str().to_string()) else { continue };
        n += 1;
        let tag = format!("pbx{n}");
        let mut code = 200;
        match method.as_str() {
            "INVITE" if failing.load(Ordering::Relaxed) => {
                Stats::bump(&mut lock(&stats).failovers, sec(t0));
                code = 503;
            }
            "INVITE" => {
                let port = msg
                    .header("Via")
                    .and_then(|v| v.split(';').next())
                    .and_then(|v| v.rsplit(':').next())
                    .and_then(|p| p.trim().parse().ok());
                if let Some(port) = port {
                    let mut s = lock(&stats);
                    let i = sec(t0);
                    if s.egress.len() <= i {
                        s.egress.resize(i + 1, HashMap::new());
                    }
                    *s.egress[i].entry(port).or_default() += 1;
                }
            }
            _ => {}
        }
        let Some(out) = hatrunk_sip::uas::answer(&msg, code, &addr.to_string(), &tag, Some(SDP)) else { continue };
        let _ = sock.send_to(&out.to_bytes(), from).await;
    }
}

struct Pending {
    offered: Duration,
    invite: SipMessage,
    bye: Option<(Instant, SipMessage, SocketAddr)>,
    bye_sent: Option<Instant>,
    done: bool,
}

#[allow(clippy::too_many_arguments)]
/// The carrier: `rate` calls per second to `number` at `entry` for `duration`, each held `hold`.
pub async fn carrier(
    local: SocketAddr,
    entry: SocketAddr,
    number: String,
    rate: u32,
    hold: Duration,
    duration: Duration,
    stats: Shared,
    t0: Instant,
) -> std::io::Result<()> {
    let sock = UdpSocket::bind(local).await?;
    let mut calls: HashMap<String, Pending> = HashMap::new();
    let mut next = 0u64;
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut send_tick = tokio::time::interval(gap);
    let mut check = tokio::time::interval(Duration::from_millis(50));
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = send_tick.tick(), if started.elapsed() < duration => {
                next += 1;
                let cid = format!("demo-{next}-{}", local.port());
                let text = format!(
                    "INVITE sip:{number}@{entry} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKdemo{next};rport\r\n\
                     From: <sip:carrier@{local}>;tag=c{next}\r\nTo: <sip:{number}@{entry}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
                     Contact: <sip:carrier@{local}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
                    SDP.len()
                );
                if let Ok(invite) = parse(text.as_bytes(), true) {
                    let _ = sock.send_to(text.as_bytes(), entry).await;
                    Stats::bump(&mut lock(&stats).offered, sec(t0));
                    calls.insert(cid, Pending { offered: t0.elapsed(), invite, bye: None, bye_sent: None, done: false });
                }
            }
            r = sock.recv_from(&mut buf) => {
                let (len, _) = r?;
                let Ok(msg) = parse(&buf[..len], true) else { continue };
                on_response(&sock, &msg, &mut calls, &stats, t0, hold, entry).await;
            }
            _ = check.tick() => {
                let now = Instant::now();
                for p in calls.values_mut() {
                    if let Some((at, bye, to)) = &p.bye {
                        if p.bye_sent.is_none() && now >= *at {
                            let _ = sock.send_to(&bye.to_bytes(), *to).await;
                            p.bye_sent = Some(now);
                        }
                    }
                    let waited = t0.elapsed().saturating_sub(p.offered);
                    if !p.done && p.bye.is_none() && waited > Duration::from_secs(10) {
                        p.done = true;
                        let mut s = lock(&stats);
                        Stats::bump(&mut s.failed, sec(t0));
                        let o = p.offered;
                        s.outcomes.push((o, false));
                    }
                    if let Some(sent) = p.bye_sent {
                        if !p.done && now.duration_since(sent) > Duration::from_secs(5) {
                            p.done = true;
                            lock(&stats).bye_failed += 1;
                        }
                    }
                }
                calls.retain(|_, p| !p.done);
                if started.elapsed() >= duration && calls.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

async fn on_response(
    sock: &UdpSocket,
    msg: &SipMessage,
    calls: &mut HashMap<String, Pending>,
    stats: &Shared,
    t0: Instant,
    hold: Duration,
    entry: SocketAddr,
) {
    let (Some(code), Some(cid)) = (msg.code(), msg.header("Call-ID")) else { return };
    let Some(p) = calls.get_mut(cid) else { return };
    let is_bye = msg.header("CSeq").is_some_and(|c| c.ends_with("BYE"));
    if is_bye {
        if code >= 200 && !p.done {
            p.done = true;
            let mut s = lock(stats);
            if code < 300 {
                s.bye_ok += 1
            } else {
                s.bye_failed += 1
            }
        }
        return;
    }
    if code < 200 || p.bye.is_some() {
        return;
    }
    let to = msg.header("To").unwrap_or("").to_string();
    if code >= 300 {
        // hop-by-hop ACK for a failure, same branch as the INVITE (RFC 3261 section 17.1.1.3)
        let mut ack = SipMessage::request(hatrunk_sip::Method::Ack, p.invite.uri().unwrap_or("").to_string());
        for h in ["Via", "From", "Call-ID"] {
            if let Some(v) = p.invite.header(h) {
                ack.push(h, v);
            }
        }
        ack.push("To", to);
        ack.push("CSeq", "1 ACK");
        ack.push("Max-Forwards", "70");
        let _ = sock.send_to(&ack.to_bytes(), entry).await;
        p.done = true;
        let mut s = lock(stats);
        Stats::bump(&mut s.failed, sec(t0));
        let o = p.offered;
        s.outcomes.push((o, false));
        return;
    }
    // 2xx: ACK and later BYE go to the remote target through the recorded route (section 12.2)
    let target = msg.header("Contact").map(|c| addr_uri(c).to_string()).unwrap_or_default();
    let mut route: Vec<String> = msg.headers_named("Record-Route").map(str::to_string).collect();
    route.reverse();
    let first_hop = route.first().and_then(|r| hostport(addr_uri(r))).unwrap_or(entry);
    let local =
        p.invite.header("Via").and_then(|v| v.split_whitespace().nth(1)).and_then(|h| h.split(';').next()).unwrap_or("").to_string();
    let build = |method: hatrunk_sip::Method, cseq: &str, branch: &str| {
        let mut m = SipMessage::request(method, target.clone());
        m.push("Via", format!("SIP/2.0/UDP {local};branch={branch}"));
        for r in &route {
            m.push("Route", r.clone());
        }
        if let Some(f) = p.invite.header("From") {
            m.push("From", f);
        }
        m.push("To", to.clone());
        m.push("Call-ID", cid);
        m.push("CSeq", cseq);
        m.push("Max-Forwards", "70");
        m
    };
    let ack = build(hatrunk_sip::Method::Ack, "1 ACK", &format!("z9hG4bKack{cid}"));
    let bye = build(hatrunk_sip::Method::Bye, "2 BYE", &format!("z9hG4bKbye{cid}"));
    let _ = sock.send_to(&ack.to_bytes(), first_hop).await;
    p.bye = Some((Instant::now() + hold, bye, first_hop));
    let mut s = lock(stats);
    Stats::bump(&mut s.answered, sec(t0));
    let o = p.offered;
    s.outcomes.push((o, true));
}

/// A SIP URI's host and port, when the host is a literal address.
fn hostport(uri: &str) -> Option<SocketAddr> {
    let t = hatrunk_core::trunk::parse_sip_target(uri).ok()?;
    Some(SocketAddr::new(t.host.parse().ok()?, t.port))
}

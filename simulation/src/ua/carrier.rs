//! The carrier: places calls at a rate to the cluster's entry nodes in its preference order, as a
//! carrier's dispatcher does. A node that says nothing (not even 100 Trying) within a second is
//! given up for five: the call is CANCELled there and placed again at the next node under a new
//! Call-ID. Answered calls are ACKed and hung up after their hold time along the recorded route.
//! INVITE and BYE are retransmitted per RFC 3261 (UDP may lose them).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hatrunk_sip::headers::addr_uri;
use hatrunk_sip::parse::parse;
use hatrunk_sip::{Method, SipMessage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use turmoil::net::UdpSocket;

use super::{backoff, cseq_method, SDP, T1_MS, TIMER_B_MS};
use crate::oracle::{now_ms, Shared};
use crate::topology::{Layout, NUMBER, SIP_PORT};

/// The offered load.
#[derive(Debug, Clone)]
pub struct Load {
    pub start_ms: u64,
    pub end_ms: u64,
    pub rate: f64,
    pub hold_ms: (u64, u64),
}

/// How long the carrier waits for a node's first answer before moving the call.
const MOVE_AFTER_MS: u64 = 1000;
const SUSPECT_MS: u64 = 5000;

enum State {
    Inviting,
    Up { bye_at: u64, bye: bytes::Bytes, to: SocketAddr, ack: bytes::Bytes, sent: Option<u64>, next: u64, gap: u64 },
    Done,
}

struct Attempt {
    cid: String,
    entry: usize,
    to: SocketAddr,
    invite: SipMessage,
    bytes: bytes::Bytes,
    created: u64,
    trying: bool,
    next_rt: u64,
    gap: u64,
    hold: u64,
    moves: usize,
    abandoned: bool,
    state: State,
}

pub async fn run(load: Load, seed: u64, oracle: Shared, layout: Rc<Layout>) -> turmoil::Result {
    let sock = UdpSocket::bind(("0.0.0.0", SIP_PORT)).await?;
    let me: IpAddr = turmoil::lookup("carrier");
    let entries: Vec<SocketAddr> = layout.entry.iter().map(|n| SocketAddr::new(turmoil::lookup(n.as_str()), SIP_PORT)).collect();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xca77_1e55);
    let mut suspect = vec![0u64; entries.len()];
    let mut attempts: BTreeMap<u64, Attempt> = BTreeMap::new();
    let mut by_cid: HashMap<String, u64> = HashMap::new();
    let mut serial = 0u64;
    let mut next_call = load.start_ms;
    let mut buf = vec![0u8; 65_536];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, _) = r?;
                let Ok(msg) = parse(&buf[..n], true) else { continue };
                let Some(cid) = msg.header("Call-ID") else { continue };
                let Some(a) = by_cid.get(cid).and_then(|k| attempts.get_mut(k)) else { continue };
                on_response(&sock, &msg, a, &oracle, &layout);
            }
            _ = tick.tick() => {
                let t = now_ms();
                let ready = oracle.borrow().trunk_ready_ms.is_some();
                while ready && t >= next_call && t < load.end_ms {
                    let gap = 1000.0 / load.rate.max(0.1);
                    next_call += (gap * rng.gen_range(0.5..1.5)) as u64;
                    let hold = rng.gen_range(load.hold_ms.0..=load.hold_ms.1);
                    let e = pick(&suspect, t, 0);
                    serial += 1;
                    let a = place(&sock, me, serial, e, entries[e], hold, 0, &oracle, &layout);
                    by_cid.insert(a.cid.clone(), serial);
                    attempts.insert(serial, a);
                }
                let mut moved = Vec::new();
                for a in attempts.values_mut() {
                    step(&sock, a, t, &oracle, &mut suspect, &mut moved);
                }
                for (entry_after, hold, moves) in moved {
                    let e = pick(&suspect, t, entry_after);
                    serial += 1;
                    let a = place(&sock, me, serial, e, entries[e], hold, moves, &oracle, &layout);
                    by_cid.insert(a.cid.clone(), serial);
                    attempts.insert(serial, a);
                }
                attempts.retain(|_, a| !matches!(a.state, State::Done));
                by_cid.retain(|_, k| attempts.contains_key(k));
            }
        }
    }
}

/// The first entry not under suspicion, starting the search at `from` (that one if all are).
fn pick(suspect: &[u64], t: u64, from: usize) -> usize {
    let n = suspect.len();
    (0..n).map(|i| (from + i) % n).find(|&i| suspect[i] <= t).unwrap_or(from % n)
}

#[allow(clippy::too_many_arguments)]
fn place(
    sock: &UdpSocket,
    me: IpAddr,
    serial: u64,
    entry: usize,
    to: SocketAddr,
    hold: u64,
    moves: usize,
    oracle: &Shared,
    layout: &Layout,
) -> Attempt {
    let cid = format!("call-{serial}");
    let local = format!("{me}:{SIP_PORT}");
    let text = format!(
        "INVITE sip:{NUMBER}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKc{serial}\r\n\
         From: <sip:carrier@{local}>;tag=c{serial}\r\nTo: <sip:{NUMBER}@{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:carrier@{local}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let invite = parse(text.as_bytes(), true).expect("the carrier's own INVITE parses");
    let bytes = bytes::Bytes::from(text);
    let _ = sock.try_send_to(&bytes, to);
    let t = now_ms();
    let name = layout.entry[entry].clone();
    let mut o = oracle.borrow_mut();
    o.log(format!("carrier offer {cid} to {name}"));
    let c = o.call(&cid);
    c.offered_ms = t;
    c.entry = name;
    Attempt {
        cid,
        entry,
        to,
        invite,
        bytes,
        created: t,
        trying: false,
        next_rt: t + T1_MS,
        gap: T1_MS,
        hold,
        moves,
        abandoned: false,
        state: State::Inviting,
    }
}

fn step(sock: &UdpSocket, a: &mut Attempt, t: u64, oracle: &Shared, suspect: &mut [u64], moved: &mut Vec<(usize, u64, usize)>) {
    match &mut a.state {
        State::Inviting => {
            if a.abandoned {
                if t >= a.created + TIMER_B_MS {
                    a.state = State::Done;
                }
                return;
            }
            if !a.trying && t >= a.created + MOVE_AFTER_MS {
                // the node is dead or cut off from us: cancel there, try the next one
                suspect[a.entry] = t + SUSPECT_MS;
                let _ = sock.try_send_to(&cancel(&a.invite).to_bytes(), a.to);
                a.abandoned = true;
                let mut o = oracle.borrow_mut();
                o.log(format!("carrier move {}", a.cid));
                o.call(&a.cid).moved_ms = Some(t);
                if a.moves + 1 < suspect.len() {
                    moved.push((a.entry + 1, a.hold, a.moves + 1));
                } else {
                    o.call(&a.cid).gave_up_ms = Some(t);
                }
                return;
            }
            if !a.trying && t >= a.next_rt {
                let _ = sock.try_send_to(&a.bytes, a.to);
                a.gap = backoff(a.gap);
                a.next_rt = t + a.gap;
            }
            if t >= a.created + TIMER_B_MS {
                let mut o = oracle.borrow_mut();
                o.log(format!("carrier gave-up {}", a.cid));
                o.call(&a.cid).gave_up_ms = Some(t);
                a.state = State::Done;
            }
        }
        State::Up { bye_at, bye, to, sent, next, gap, .. } => {
            if sent.is_none() && t >= *bye_at {
                let _ = sock.try_send_to(bye, *to);
                *sent = Some(t);
                *next = t + T1_MS;
                let mut o = oracle.borrow_mut();
                o.log(format!("carrier bye {}", a.cid));
                o.call(&a.cid).hangup_ms = Some(t);
                o.sample();
            } else if let Some(s) = *sent {
                if t >= s + TIMER_B_MS {
                    oracle.borrow_mut().log(format!("carrier bye-timeout {}", a.cid));
                    a.state = State::Done;
                } else if t >= *next {
                    let _ = sock.try_send_to(bye, *to);
                    *gap = backoff(*gap);
                    *next = t + *gap;
                }
            }
        }
        State::Done => {}
    }
}

fn on_response(sock: &UdpSocket, msg: &SipMessage, a: &mut Attempt, oracle: &Shared, layout: &Layout) {
    let Some(code) = msg.code() else { return };
    if cseq_method(msg) == "BYE" {
        if code >= 200 {
            if let State::Up { sent: Some(_), .. } = a.state {
                let mut o = oracle.borrow_mut();
                o.log(format!("carrier bye-answered {} {code}", a.cid));
                o.call(&a.cid).bye_answered = Some(code);
                a.state = State::Done;
            }
        }
        return;
    }
    if cseq_method(msg) != "INVITE" {
        return;
    }
    if code < 200 {
        if !a.trying {
            a.trying = true;
            let mut o = oracle.borrow_mut();
            o.log(format!("carrier trying {} {code}", a.cid));
            o.call(&a.cid).trying = true;
        }
        return;
    }
    a.trying = true;
    if code >= 300 {
        // hop-by-hop ACK on the INVITE's branch (RFC 3261 section 17.1.1.3)
        let mut ack = SipMessage::request(Method::Ack, a.invite.uri().unwrap_or("").to_string());
        for h in ["Via", "From", "Call-ID"] {
            if let Some(v) = a.invite.header(h) {
                ack.push(h, v);
            }
        }
        ack.push("To", msg.header("To").unwrap_or(""));
        ack.push("CSeq", "1 ACK");
        ack.push("Max-Forwards", "70");
        let _ = sock.try_send_to(&ack.to_bytes(), a.to);
        if matches!(a.state, State::Inviting) {
            let mut o = oracle.borrow_mut();
            o.log(format!("carrier final {} {code}", a.cid));
            o.call(&a.cid).final_ = Some((now_ms(), code));
            a.state = State::Done;
        }
        return;
    }
    if let State::Up { ack, to, .. } = &a.state {
        let _ = sock.try_send_to(ack, *to); // a retransmitted 2xx
        return;
    }
    // 2xx: ACK and BYE go to the remote target through the recorded route (section 12.2)
    let target = msg.header("Contact").map(|c| addr_uri(c).to_string()).unwrap_or_default();
    let mut route: Vec<String> = msg.headers_named("Record-Route").map(str::to_string).collect();
    route.reverse();
    let first_hop = route.first().and_then(|r| socket_addr(addr_uri(r))).unwrap_or(a.to);
    let to_hdr = msg.header("To").unwrap_or("").to_string();
    let local =
        a.invite.header("Via").and_then(|v| v.split_whitespace().nth(1)).and_then(|h| h.split(';').next()).unwrap_or("").to_string();
    let build = |method: Method, cseq: &str, branch: &str| {
        let mut m = SipMessage::request(method, target.clone());
        m.push("Via", format!("SIP/2.0/UDP {local};branch={branch}"));
        for r in &route {
            m.push("Route", r.clone());
        }
        if let Some(f) = a.invite.header("From") {
            m.push("From", f);
        }
        m.push("To", to_hdr.clone());
        m.push("Call-ID", a.cid.clone());
        m.push("CSeq", cseq);
        m.push("Max-Forwards", "70");
        m
    };
    let ack = build(Method::Ack, "1 ACK", &format!("z9hG4bKa{}", a.cid)).to_bytes();
    let bye = build(Method::Bye, "2 BYE", &format!("z9hG4bKb{}", a.cid)).to_bytes();
    let _ = sock.try_send_to(&ack, first_hop);
    let t = now_ms();
    let mut o = oracle.borrow_mut();
    o.log(format!("carrier answered {} via {}", a.cid, layout.entry[a.entry]));
    if !a.abandoned {
        o.call(&a.cid).final_ = Some((t, code));
    }
    // a call we had moved elsewhere is hung up at once
    let bye_at = if a.abandoned { t } else { t + a.hold };
    a.state = State::Up { bye_at, bye, to: first_hop, ack, sent: None, next: 0, gap: T1_MS };
}

/// CANCEL for an INVITE: same Request-URI, Call-ID, From, To and top Via (RFC 3261 section 9.1).
fn cancel(invite: &SipMessage) -> SipMessage {
    let mut c = SipMessage::request(Method::Cancel, invite.uri().unwrap_or("").to_string());
    for h in ["Via", "From", "To", "Call-ID"] {
        if let Some(v) = invite.header(h) {
            c.push(h, v);
        }
    }
    c.push("CSeq", "1 CANCEL");
    c.push("Max-Forwards", "70");
    c
}

/// A SIP URI's host and port, when the host is a literal address.
fn socket_addr(uri: &str) -> Option<SocketAddr> {
    let t = hatrunk_core::trunk::parse_sip_target(uri).ok()?;
    Some(SocketAddr::new(t.host.parse().ok()?, t.port))
}

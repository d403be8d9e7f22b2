//! A PBX: answers INVITEs (100 Trying, then 200 OK with SDP, retransmitted until the ACK), or fails
//! them with a code, or stays silent, as the scenario's script says at that moment. It notes every
//! INVITE, reply, ACK and BYE in the oracle with the hatrunk node that sent it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hatrunk_sip::parse::parse;
use hatrunk_sip::SipMessage;
use turmoil::net::UdpSocket;

use super::{backoff, branch, tag_of, via_host, SDP, T1_MS, TIMER_B_MS};
use crate::oracle::{now_ms, Leg, Pbx, Shared};
use crate::topology::{Layout, SIP_PORT};

/// How the PBX treats a new INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    Fail(u16),
    /// Receives and never answers (a hung PBX).
    Silent,
}

/// The PBX's current behaviour; the driver changes it during the run.
pub type Mode = Rc<RefCell<Behaviour>>;

struct Answered {
    resp: bytes::Bytes,
    to: SocketAddr,
    next_ms: u64,
    gap: u64,
    since_ms: u64,
}

pub async fn run(which: Pbx, mode: Mode, oracle: Shared, layout: Rc<Layout>) -> turmoil::Result {
    let sock = UdpSocket::bind(("0.0.0.0", SIP_PORT)).await?;
    let name = which.host();
    let me = turmoil::lookup(name);
    // by branch: the last response, resent on a retransmitted request
    let mut last: HashMap<String, bytes::Bytes> = HashMap::new();
    let mut waiting_ack: BTreeMap<(String, String), Answered> = BTreeMap::new();
    // dialogs (Call-ID, tag) this life of the PBX answered (a restarted PBX knows none: 481 to
    // their BYEs)
    let mut dialogs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut buf = vec![0u8; 65_536];
    let mut tag = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                let Ok(msg) = parse(&buf[..n], true) else { continue };
                let Some(method) = msg.method().map(|m| m.as_str().to_string()) else { continue };
                let cid = msg.header("Call-ID").unwrap_or("").to_string();
                let br = branch(&msg);
                match method.as_str() {
                    "INVITE" => {
                        if let Some(r) = last.get(&br) {
                            let _ = sock.try_send_to(r, from);
                            continue;
                        }
                        let behaviour = *mode.borrow();
                        let egress = via_host(&msg).and_then(|ip| layout.by_ip(ip)).map(|n| n.name.clone()).unwrap_or_default();
                        {
                            let mut o = oracle.borrow_mut();
                            o.log(format!("{name} invite {cid} from {egress} {behaviour:?}"));
                            o.call(&cid).legs.entry(which).or_default().push(Leg { invite_ms: now_ms(), egress, ..Default::default() });
                        }
                        tag += 1;
                        let to_tag = format!("{name}{tag}");
                        let resp = match behaviour {
                            Behaviour::Silent => continue,
                            Behaviour::Fail(code) => msg.make_response(code, "Failed", Some(&to_tag)).to_bytes(),
                            Behaviour::Answer => {
                                let _ = sock.try_send_to(&msg.make_response(100, "Trying", None).to_bytes(), from);
                                answer(&msg, &to_tag, me)
                            }
                        };
                        let code = match behaviour { Behaviour::Fail(c) => c, _ => 200 };
                        {
                            let mut o = oracle.borrow_mut();
                            o.log(format!("{name} reply {cid} {code}"));
                            if let Some(l) = o.call(&cid).legs.entry(which).or_default().last_mut() {
                                l.reply = Some((now_ms(), code));
                                l.tag = to_tag.clone();
                            }
                            if code == 200 {
                                let sec = now_ms() / 1000;
                                let egress = o.calls.get(&cid).and_then(|c| c.legs.get(&which)).and_then(|l| l.last()).map(|l| l.egress.clone()).unwrap_or_default();
                                *o.egress.entry(sec).or_default().entry(egress).or_default() += 1;
                                o.sample();
                            }
                        }
                        let _ = sock.try_send_to(&resp, from);
                        last.insert(br, resp.clone());
                        if code == 200 {
                            let t = now_ms();
                            dialogs.insert((cid.clone(), to_tag.clone()));
                            waiting_ack.insert((cid, to_tag), Answered { resp, to: from, next_ms: t + T1_MS, gap: T1_MS, since_ms: t });
                        }
                    }
                    "ACK" => {
                        let tag = tag_of(&msg);
                        let answered = waiting_ack.remove(&(cid.clone(), tag.clone())).is_some();
                        let mut o = oracle.borrow_mut();
                        if answered {
                            o.log(format!("{name} ack {cid} {tag}"));
                        }
                        // also the hop-by-hop ACK of a failure: proof the node heard it
                        if let Some(l) = o.call(&cid).legs.entry(which).or_default().iter_mut().find(|l| l.tag == tag) {
                            l.ack_ms.get_or_insert(now_ms());
                        }
                    }
                    "BYE" => {
                        if let Some(r) = last.get(&br) {
                            let _ = sock.try_send_to(r, from);
                            continue;
                        }
                        let tag = tag_of(&msg);
                        waiting_ack.remove(&(cid.clone(), tag.clone()));
                        if !dialogs.remove(&(cid.clone(), tag.clone())) {
                            let r = msg.make_response(481, "Call/Transaction Does Not Exist", None).to_bytes();
                            let _ = sock.try_send_to(&r, from);
                            last.insert(br, r);
                            continue;
                        }
                        {
                            let mut o = oracle.borrow_mut();
                            let leg = o.call(&cid).legs.entry(which).or_default().iter_mut().find(|l| l.tag == tag && l.bye_ms.is_none());
                            if let Some(l) = leg {
                                l.bye_ms = Some(now_ms());
                                o.log(format!("{name} bye {cid} {tag}"));
                                o.sample();
                            }
                        }
                        let r = msg.make_response(200, "OK", None).to_bytes();
                        let _ = sock.try_send_to(&r, from);
                        last.insert(br, r);
                    }
                    "CANCEL" => {
                        let _ = sock.try_send_to(&msg.make_response(200, "OK", None).to_bytes(), from);
                    }
                    "OPTIONS" => {
                        let _ = sock.try_send_to(&msg.make_response(200, "OK", None).to_bytes(), from);
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let t = now_ms();
                let mut gave_up = Vec::new();
                for (cid, a) in waiting_ack.iter_mut() {
                    if t >= a.since_ms + TIMER_B_MS {
                        gave_up.push(cid.clone());
                    } else if t >= a.next_ms {
                        let _ = sock.try_send_to(&a.resp, a.to);
                        a.gap = backoff(a.gap);
                        a.next_ms = t + a.gap;
                    }
                }
                gave_up.sort();
                for (cid, tag) in gave_up {
                    waiting_ack.remove(&(cid.clone(), tag.clone()));
                    let mut o = oracle.borrow_mut();
                    o.log(format!("{name} no-ack {cid} {tag}"));
                    if let Some(l) = o.call(&cid).legs.entry(which).or_default().iter_mut().find(|l| l.tag == tag) {
                        l.no_ack_ms = Some(t);
                    }
                    o.sample();
                }
                if last.len() > 50_000 {
                    last.clear();
                }
            }
        }
    }
}

/// The 200 OK for `req`: the Record-Route copied back, a Contact, SDP.
fn answer(req: &SipMessage, tag: &str, me: std::net::IpAddr) -> bytes::Bytes {
    let mut r = req.make_response(200, "OK", Some(tag));
    for rr in req.headers_named("Record-Route") {
        r.push("Record-Route", rr);
    }
    r.push("Contact", format!("<sip:pbx@{me}:{SIP_PORT}>"));
    r.push("Content-Type", "application/sdp");
    r.body = bytes::Bytes::from_static(SDP.as_bytes());
    r.to_bytes()
}

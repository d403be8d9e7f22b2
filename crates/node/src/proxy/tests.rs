//! The engine driven directly, with time and sockets as plain values: the paths end-to-end tests
//! cannot force (a PBX answering after we moved on, a CANCEL before any provisional response).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hatrunk_core::ha::{HealthView, Member};
use hatrunk_core::pool::Decision;
use hatrunk_sip::parse::parse;
use hatrunk_sip::transport::{Incoming, Proto};
use hatrunk_sip::{Method, SipMessage};

use super::{Action, Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::{BoxFuture, TrunkStore};

/// Trunks in memory: the engine reads through the `TrunkStore` trait and never needs more here.
/// The fourth field says how far this member's copy has come.
struct MemStore(Vec<Arc<hatrunk_core::trunk::Trunk>>, Option<String>, Option<(String, String, u64)>, Arc<Lag>);

/// How far a test member's replicated state has come: its applied index, and whether its trunks'
/// numbers are hidden (not applied yet, or deleted).
#[derive(Default)]
pub(super) struct Lag {
    pub hidden: std::sync::atomic::AtomicBool,
    pub applied: std::sync::atomic::AtomicU64,
    /// Reading the applied index shows the numbers: a batch applied (numbers and index in one
    /// write) between the engine's looking up a number and its reading the index.
    pub applies_on_read: std::sync::atomic::AtomicBool,
}

impl Lag {
    /// Numbers hidden at `applied`.
    pub fn at(hidden: bool, applied: u64) -> Arc<Lag> {
        Arc::new(Lag { hidden: hidden.into(), applied: applied.into(), applies_on_read: false.into() })
    }
    pub fn set(&self, hidden: bool, applied: u64) {
        self.hidden.store(hidden, std::sync::atomic::Ordering::Relaxed);
        self.applied.store(applied, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TrunkStore for MemStore {
    fn apply(&self, _: hatrunk_core::trunk::Trunk, _: hatrunk_consensus::Expect) -> BoxFuture<'_, Result<u64, crate::NodeError>> {
        Box::pin(async { Err(crate::NodeError::Refused("the engine's tests do not write trunks".into())) })
    }
    fn delete(&self, _: String, _: bool) -> BoxFuture<'_, Result<(), crate::NodeError>> {
        Box::pin(async { Err(crate::NodeError::Refused("the engine's tests do not write trunks".into())) })
    }
    fn revision(&self, _: &str) -> u64 {
        1
    }
    fn get(&self, id: &str) -> Option<Arc<hatrunk_core::trunk::Trunk>> {
        self.0.iter().find(|t| t.id == id).cloned()
    }
    fn list(&self) -> Vec<Arc<hatrunk_core::trunk::Trunk>> {
        self.0.clone()
    }
    fn by_number(&self, n: &str) -> Option<Arc<hatrunk_core::trunk::Trunk>> {
        if self.3.hidden.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.0.iter().find(|t| t.numbers.iter().any(|x| x == n)).cloned()
    }
    fn by_source(&self, ip: std::net::IpAddr) -> Vec<(Arc<hatrunk_core::trunk::Trunk>, hatrunk_core::trunk::Role)> {
        use hatrunk_core::trunk::Role;
        self.0
            .iter()
            .flat_map(|t| [Role::Primary, Role::Secondary].into_iter().map(move |r| (t.clone(), r)))
            .filter(|(t, r)| t.account(*r).is_some_and(|a| a.allowed_ips.iter().any(|n| n.contains(&ip))))
            .collect()
    }
    fn by_username(&self, user: &str) -> Option<(Arc<hatrunk_core::trunk::Trunk>, hatrunk_core::trunk::Role)> {
        use hatrunk_core::trunk::Role;
        self.0.iter().find_map(|t| {
            [Role::Primary, Role::Secondary]
                .into_iter()
                .find(|r| t.account(*r).and_then(|a| a.username.as_deref()) == Some(user))
                .map(|r| (t.clone(), r))
        })
    }
    fn register(&self, _: String, _: String, _: String, _: u64) -> BoxFuture<'_, Result<(), crate::NodeError>> {
        Box::pin(async { Ok(()) })
    }
    fn registration(&self, _: &str) -> Option<(String, String, u64)> {
        self.2.clone()
    }
    fn cluster_secret(&self) -> Option<String> {
        self.1.clone()
    }
    fn applied(&self) -> u64 {
        if self.3.applies_on_read.load(std::sync::atomic::Ordering::Relaxed) {
            self.3.hidden.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.3.applied.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub(super) const CARRIER: &str = "10.9.9.9:5060";
pub(super) const PRIMARY: &str = "10.0.0.1:5060";
pub(super) const SECONDARY: &str = "10.0.0.2:5060";

pub(super) const TRUNK: &str =
    "id = \"t\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\nfailover_timeout_ms = 1000\n\
     [primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1:5060\"\nallowed_ips = [\"10.0.0.1\"]\n\
     [secondary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.2:5060\"\nallowed_ips = [\"10.0.0.2\"]\n";

pub(super) fn member(id: u64, zone: &str, sip_addr: &str) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        region: "r".into(),
        zone: zone.into(),
        sip: !sip_addr.is_empty(),
        voter: true,
        sip_addr: sip_addr.into(),
    }
}

pub(super) async fn engine() -> Engine {
    engine_with(TRUNK, HealthView::single(member(1, "z", "127.0.0.1:5060")))
}

pub(super) fn engine_with(trunk: &str, view: HealthView) -> Engine {
    engine_on(trunk, Arc::new(view))
}

pub(super) fn engine_on(trunk: &str, view: Arc<dyn crate::cluster_health::ClusterView>) -> Engine {
    engine_signed(trunk, view, None)
}

/// An engine whose cluster has `secret` as its shared secret.
pub(super) fn engine_signed(trunk: &str, view: Arc<dyn crate::cluster_health::ClusterView>, secret: Option<&str>) -> Engine {
    engine_full(trunk, view, secret, None, 1)
}

/// An engine for node `id` whose replicated state holds the binding `registration` (contact,
/// route, expiry) for any Digest user.
pub(super) fn engine_full(
    trunk: &str,
    view: Arc<dyn crate::cluster_health::ClusterView>,
    secret: Option<&str>,
    registration: Option<(String, String, u64)>,
    id: u64,
) -> Engine {
    engine_behind(trunk, view, secret, registration, id, Arc::default())
}

/// [`engine_full`] whose copy of the trunks is as `lag` says (behind or ahead of the cluster's).
pub(super) fn engine_behind(
    trunk: &str,
    view: Arc<dyn crate::cluster_health::ClusterView>,
    secret: Option<&str>,
    registration: Option<(String, String, u64)>,
    id: u64,
    behind: Arc<Lag>,
) -> Engine {
    let trunk = hatrunk_core::trunk::parse_trunk(trunk).expect("trunk");
    let store = Arc::new(MemStore(vec![Arc::new(trunk)], secret.map(str::to_string), registration, behind));
    let cfg = EngineConfig {
        node_id: id,
        node: format!("n{id}"),
        zone: "z".into(),
        region: "r".into(),
        udp: "127.0.0.1:5060".parse().expect("addr"),
        tcp: "127.0.0.1:5060".parse().expect("addr"),
        tls: None,
        advertise: "127.0.0.1".into(),
        congestion_code: 503,
        upstream: None,
        nonce_secret: "s".into(),
        nonce_lifetime_ms: 300_000,
        min_expires_s: 60,
        max_expires_s: 3600,
        nat_max_expires_s: 120,
        nat_keepalive_ms: 20_000,
        forward_timeout_ms: 800,
        seed: 7,
        guard: hatrunk_core::guard::GuardLimits::default(),
        trusted: Vec::new(),
        max_transactions: 1_000,
        shed_backlog: usize::MAX,
        shed_wait_ms: u64::MAX,
        member_probe_ms: 0,
    };
    Engine::new(cfg, store as Arc<dyn TrunkStore>, view, Arc::new(Metrics::new().expect("metrics")), Arc::new(SharedStatus::default()))
}

pub(super) fn from(addr: &str, text: &str) -> Incoming {
    let text = if text.contains('\r') { text.to_string() } else { text.replace('\n', "\r\n") };
    Incoming {
        bytes: Bytes::from(text),
        proto: Proto::Udp,
        peer: addr.parse().expect("addr"),
        conn: None,
        arrived: tokio::time::Instant::now(),
    }
}

/// Messages sent to `addr` among `actions`.
pub(super) fn sent_to(actions: &[Action], addr: &str) -> Vec<SipMessage> {
    let want: SocketAddr = addr.parse().expect("addr");
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { addr, bytes, .. } if *addr == want => parse(bytes, true).ok(),
            _ => None,
        })
        .collect()
}

pub(super) fn admit_id(actions: &[Action]) -> u64 {
    actions.iter().find_map(|a| if let Action::Admit { call, .. } = a { Some(*call) } else { None }).expect("an Admit action")
}

/// The slot an Admit action asks for.
pub(super) fn admitted_slot(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| if let Action::Admit { slot, .. } = a { Some(slot.to_string()) } else { None })
}

/// The slots released.
pub(super) fn released(actions: &[Action]) -> Vec<String> {
    actions.iter().filter_map(|a| if let Action::Release { slot } = a { Some(slot.to_string()) } else { None }).collect()
}

pub(super) const INVITE: &str = "INVITE sip:1000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKcarrier1
From: <sip:caller@10.9.9.9>;tag=c1
To: <sip:1000@127.0.0.1>
Call-ID: call-1
CSeq: 1 INVITE
Contact: <sip:caller@10.9.9.9:5060>
Max-Forwards: 70
Content-Length: 0

";

/// A response from a PBX to the forwarded request `req`.
pub(super) fn answer(req: &SipMessage, code: u16, reason: &str, contact: &str) -> String {
    let mut r = req.make_response(code, reason, Some("pbx"));
    r.push("Contact", format!("<sip:{contact}>"));
    String::from_utf8_lossy(&r.to_bytes()).into_owned()
}

#[tokio::test]
async fn silent_primary_then_late_answer_is_torn_down() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let a = e.drain();
    assert_eq!(sent_to(&a, CARRIER)[0].code(), Some(100));
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    assert_eq!(to_primary[0].method(), Some(&Method::Invite));
    assert_eq!(to_primary[0].header("Max-Forwards"), Some("69"));
    assert!(to_primary[0].header("Record-Route").is_some_and(|r| r.contains("127.0.0.1:5060;lr")));
    // nothing from the Primary for the failover timer (1000 ms): the Secondary gets the call
    e.on_tick(999);
    assert!(sent_to(&e.drain(), SECONDARY).is_empty(), "not before the timer");
    e.on_tick(1001);
    let to_secondary = sent_to(&e.drain(), SECONDARY);
    assert_eq!(to_secondary.len(), 1);
    // the Primary wakes up and answers: ACK and BYE it, do not pass it to the caller
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 1200);
    let a = e.drain();
    let back: Vec<_> = sent_to(&a, PRIMARY).iter().filter_map(|m| m.method().cloned()).collect();
    assert_eq!(back, vec![Method::Ack, Method::Bye]);
    assert!(sent_to(&a, CARRIER).is_empty());
    // the Secondary answers: the caller gets it
    e.on_message(from(SECONDARY, &answer(&to_secondary[0], 200, "OK", SECONDARY)), 1300);
    let to_carrier = sent_to(&e.drain(), CARRIER);
    assert_eq!(to_carrier.iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![200]);
    assert_eq!(to_carrier[0].headers_named("Via").count(), 1, "our Via is gone");
}

/// A Primary that never answered gets no more copies of the INVITE once the call went to the
/// Secondary: each would be a chance of a second dialog at the PBX (and one more call over the
/// limit as the PBX counts them).
#[tokio::test]
async fn an_abandoned_silent_primary_is_not_sent_the_invite_again() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    assert_eq!(sent_to(&e.drain(), PRIMARY).len(), 1);
    e.on_tick(600);
    assert_eq!(sent_to(&e.drain(), PRIMARY).len(), 1, "Timer A retransmits while the attempt is live");
    e.on_tick(1001);
    assert_eq!(sent_to(&e.drain(), SECONDARY).len(), 1);
    for t in [1_600, 2_600, 4_600, 8_600, 16_600] {
        e.on_tick(t);
        assert!(sent_to(&e.drain(), PRIMARY).is_empty(), "no copy at {t} ms");
    }
}

/// A caller's CANCEL before the PBX said anything: no CANCEL may go yet (RFC 3261 section 9.1),
/// and no more copies of the INVITE either (seed 2100915: the Primary answered the fifth, 7.5 s on).
#[tokio::test]
async fn a_cancelled_attempt_that_heard_nothing_is_not_sent_the_invite_again() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    assert_eq!(sent_to(&e.drain(), PRIMARY).len(), 1);
    let cancel = INVITE.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    e.on_message(from(CARRIER, &cancel), 100);
    assert!(sent_to(&e.drain(), PRIMARY).is_empty());
    for t in [600, 1_600, 3_600] {
        e.on_tick(t);
        assert!(sent_to(&e.drain(), PRIMARY).is_empty(), "no copy at {t} ms");
    }
}

#[tokio::test]
async fn cancel_before_any_provisional_cancels_downstream_once_it_rings() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let cancel = INVITE.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    e.on_message(from(CARRIER, &cancel), 100);
    let a = e.drain();
    let codes: Vec<_> = sent_to(&a, CARRIER).iter().filter_map(|m| m.code()).collect();
    assert_eq!(codes, vec![200, 487]);
    assert!(!a.iter().any(|x| matches!(x, Action::Release { .. })), "the Primary may still answer: the slot stays taken");
    assert!(a.iter().any(|x| matches!(x, Action::Cdr(c) if c.cause == hatrunk_core::cdr::Cause::OriginatorCancel && !c.failover)));
    assert!(sent_to(&a, PRIMARY).is_empty(), "no CANCEL before a provisional (RFC 3261 section 9.1)");
    // the Primary starts ringing: now it is cancelled, and nothing reaches the Secondary
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 180, "Ringing", PRIMARY)), 200);
    let a = e.drain();
    let sent = sent_to(&a, PRIMARY);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method(), Some(&Method::Cancel));
    assert_eq!(sent[0].header("Via"), to_primary[0].header("Via"), "same branch as the INVITE");
    assert!(!a.iter().any(|x| matches!(x, Action::Release { .. })));
    // the Primary confirms with 487: its leg is gone, the slot comes back
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 487, "Request Terminated", PRIMARY)), 300);
    assert!(e.drain().iter().any(|x| matches!(x, Action::Release { .. })), "slot back once the Primary said 487");
    e.on_tick(5000);
    assert!(sent_to(&e.drain(), SECONDARY).is_empty());
}

#[tokio::test]
async fn a_cancelled_calls_slot_comes_back_after_timer_b_if_the_pbx_never_answers() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    e.drain();
    let cancel = INVITE.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL");
    e.on_message(from(CARRIER, &cancel), 100);
    assert!(!e.drain().iter().any(|x| matches!(x, Action::Release { .. })));
    e.on_tick(100 + hatrunk_sip::transaction::TIMEOUT);
    assert!(e.drain().iter().any(|x| matches!(x, Action::Release { .. })), "released at Timer B");
}

#[tokio::test]
async fn full_pool_gets_congestion_with_q850_reason() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Full { used: 5, limit: 5 }), 1);
    let a = e.drain();
    let r = &sent_to(&a, CARRIER)[0];
    assert_eq!(r.code(), Some(503));
    assert_eq!(r.header("Reason"), Some("Q.850;cause=34;text=\"No circuit/channel available\""));
    assert!(!a.iter().any(|x| matches!(x, Action::Release { .. })), "nothing was taken, nothing is given back");
}

/// The simulation found this: our ACK to the PBX was lost, the caller hung up, and the PBX's 200
/// retransmission arrived after the call had ended. Taken for a late answer, it drew a BYE of ours
/// that ended the PBX's dialog first, and the caller's own BYE then got 481.
#[tokio::test]
async fn a_2xx_retransmitted_after_the_call_ended_goes_to_the_caller_not_torn_down() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let a = e.drain();
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let ok = answer(&to_primary[0], 200, "OK", PRIMARY);
    e.on_message(from(PRIMARY, &ok), 10);
    let to_carrier = sent_to(&e.drain(), CARRIER);
    assert_eq!(to_carrier[0].code(), Some(200));
    let route = to_primary[0].header("Record-Route").expect("record-route").to_string();
    let bye = format!(
        "BYE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKbye1\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\nTo: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
    );
    e.on_message(from(CARRIER, &bye), 2000);
    let to_pbx = sent_to(&e.drain(), PRIMARY);
    assert_eq!(to_pbx.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Bye]);
    let bye_ok = String::from_utf8_lossy(&to_pbx[0].make_response(200, "OK", None).to_bytes()).into_owned();
    e.on_message(from(PRIMARY, &bye_ok), 2010);
    assert_eq!(sent_to(&e.drain(), CARRIER)[0].code(), Some(200), "the BYE's 200 reaches the caller");
    // the 200 for the INVITE again, after the call ended
    e.on_message(from(PRIMARY, &ok), 2500);
    let a = e.drain();
    assert!(sent_to(&a, PRIMARY).is_empty(), "no ACK or BYE of ours: {:?}", sent_to(&a, PRIMARY));
    let up = sent_to(&a, CARRIER);
    assert_eq!(up.iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![200], "the caller gets it and ACKs it");
}

/// A call's slot goes back when the far end has its BYE, not as it passes: were this node to
/// restart in between, the slot would be kept and the retransmitted BYE would free it once more
/// (simulation seed 910034: 16 calls on a limit of 15 after a power loss). A BYE that never gets an
/// answer frees it when its transaction times out.
#[tokio::test]
async fn a_bye_frees_the_slot_once_the_far_end_answered_it_or_timed_out() {
    for answered in [true, false] {
        let mut e = engine().await;
        e.on_message(from(CARRIER, INVITE), 0);
        let a = e.drain();
        e.on_admitted(admit_id(&a), Ok(Decision::Granted), 1);
        let to_primary = sent_to(&e.drain(), PRIMARY);
        e.on_message(from(PRIMARY, &answer(&to_primary[0], 200, "OK", PRIMARY)), 10);
        e.drain();
        let route = to_primary[0].header("Record-Route").expect("record-route").to_string();
        let bye = format!(
            "BYE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKbye1\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\nTo: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: call-1\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
        );
        e.on_message(from(CARRIER, &bye), 2000);
        let a = e.drain();
        assert!(a.iter().any(|x| matches!(x, Action::Cdr(_))), "the call's CDR is written as the BYE passes");
        assert!(!a.iter().any(|x| matches!(x, Action::Release { .. })), "the PBX does not have the BYE yet");
        let to_pbx = sent_to(&a, PRIMARY);
        if answered {
            let bye_ok = String::from_utf8_lossy(&to_pbx[0].make_response(200, "OK", None).to_bytes()).into_owned();
            e.on_message(from(PRIMARY, &bye_ok), 2010);
        } else {
            for t in (2100..=34_200).step_by(100) {
                e.on_tick(t);
            }
        }
        let a = e.drain();
        assert_eq!(a.iter().filter(|x| matches!(x, Action::Release { .. })).count(), 1, "answered {answered}: the slot goes back once");
    }
}

/// A node's calls outlive its process. A BYE whose Route names an earlier run of this node (the
/// Record-Route's `ht` parameter) frees one of the slots kept for those calls once the far end
/// answers it 2xx; one the far end answers 481 (its call had ended before the restart: a BYE
/// retransmitted across it) frees nothing, and neither does one naming this run.
#[tokio::test]
async fn a_bye_for_an_earlier_runs_call_frees_a_kept_slot() {
    let mut e = engine().await;
    e.on_message(from(CARRIER, INVITE), 0);
    let a = e.drain();
    e.on_admitted(admit_id(&a), Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    let rr = to_primary[0].header("Record-Route").expect("record-route").to_string();
    assert!(rr.contains(";ht="), "the slot holder names its boot and trunk: {rr}");
    let bye = |route: &str, cid: &str| {
        format!(
            "BYE sip:{PRIMARY} SIP/2.0\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK{cid}\nRoute: {route}\nFrom: <sip:caller@10.9.9.9>;tag=c1\nTo: <sip:1000@127.0.0.1>;tag=pbx\nCall-ID: {cid}\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n"
        )
    };
    let inherited = |a: &[Action]| {
        a.iter()
            .filter_map(|x| if let Action::ReleaseInherited { trunk, call_id } = x { Some((trunk.clone(), call_id.clone())) } else { None })
            .collect::<Vec<_>>()
    };
    // this run's tag, for a call that is not (or no longer) here: nothing to free
    e.on_message(from(CARRIER, &bye(&rr, "gone-1")), 100);
    assert!(inherited(&e.drain()).is_empty());
    // an earlier run's tag
    let tag: String = rr.split(";ht=").nth(1).expect("ht").chars().take_while(|c| *c != '>' && *c != ';').collect();
    let trunk = tag.split_once('.').map(|(_, t)| t.to_string()).expect("boot.trunk");
    let old = rr.replace(&tag, &format!("deadbeef.{trunk}"));
    e.on_message(from(CARRIER, &bye(&old, "earlier-1")), 200);
    let a = e.drain();
    assert!(inherited(&a).is_empty(), "nothing is freed while the BYE is on its way");
    let relayed = sent_to(&a, PRIMARY);
    assert_eq!(relayed.iter().filter_map(|m| m.method().cloned()).collect::<Vec<_>>(), vec![Method::Bye], "the BYE goes on");
    e.on_message(from(PRIMARY, &answer(&relayed[0], 200, "OK", PRIMARY)), 210);
    let a = e.drain();
    assert_eq!(inherited(&a), vec![(trunk.clone(), "earlier-1".to_string())], "the far end ended the call: its slot goes");
    assert_eq!(sent_to(&a, CARRIER).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![200]);
    // a BYE of the earlier run the far end no longer knows: its call ended before the restart
    e.on_message(from(CARRIER, &bye(&old, "earlier-2")), 300);
    let relayed = sent_to(&e.drain(), PRIMARY);
    e.on_message(from(PRIMARY, &answer(&relayed[0], 481, "Call/Transaction Does Not Exist", PRIMARY)), 310);
    let a = e.drain();
    assert!(inherited(&a).is_empty(), "a 481 frees no kept slot: {:?}", inherited(&a));
    assert_eq!(sent_to(&a, CARRIER).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![481], "the caller hears it");
}

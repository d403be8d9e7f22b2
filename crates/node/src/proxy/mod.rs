//! The SIP proxy core: a transaction-stateful, record-routing proxy (RFC 3261 section 16) whose every
//! decision is made synchronously from `(state, event, now)`; what must happen outside (send bytes,
//! ask admission, write a CDR) comes out as [`Action`]s. The driver ([`crate::runtime`]) feeds it
//! socket events, admission answers and timer ticks, so the same engine can run under turmoil.
//!
//! Files: `mod.rs` dispatch and transactions; `timers.rs` the timer heaps and per-tick upkeep;
//! `auth.rs` digest checks; `call.rs` the inbound/outbound INVITE path (modes, failover); `cancel.rs`
//! CANCEL and late answers; `egress.rs` Advanced HA forwarding between nodes; `dialog.rs` in-dialog
//! routing and slot release; `registrar.rs` REGISTER and digest; `probe.rs` OPTIONS answered and
//! health probing; `guard.rs` per-source limits, bans and the transaction limit. What a proxy builds itself
//! (responses, ACK, CANCEL, error replies) and the transaction key live in `hatrunk-sip`.

mod auth;
mod call;
mod cancel;
mod dialog;
mod egress;
mod forward_sig;
mod guard;
mod probe;
mod registrar;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_egress;
#[cfg(test)]
mod tests_guard;
#[cfg(test)]
mod tests_time;
mod timers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hatrunk_core::cdr::Cdr;
use hatrunk_core::guard::Guard;
use hatrunk_core::pool::Decision;
use hatrunk_core::rr::RoundRobin;
use hatrunk_core::trunk::Role;
use hatrunk_sip::build::{self, stamp_received};
use hatrunk_sip::digest::NonceIssuer;
use hatrunk_sip::headers::Via;
use hatrunk_sip::parse::parse;
use hatrunk_sip::transaction::{ClientTx, Effect, Kind, ServerTx, TxKey};
use hatrunk_sip::transport::{Incoming, Proto};
use hatrunk_sip::{Method, SipError, SipMessage};

use crate::cluster_health::ClusterView;
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

pub use call::Call;
use dialog::Dialog;
use registrar::Registrar;
use timers::{CallTimer, TimerKey};

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Src {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub conn: Option<u64>,
}

/// What the driver must carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send {
        proto: Proto,
        addr: SocketAddr,
        conn: Option<u64>,
        bytes: Bytes,
    },
    /// Ask admission for a slot; answer with [`Engine::on_admitted`].
    Admit {
        call: u64,
        trunk: String,
        limit: u32,
        slot: String,
    },
    Release {
        slot: String,
    },
    /// A BYE of a call an earlier run of this node admitted on `trunk` passed through.
    ReleaseInherited {
        trunk: String,
        call_id: String,
    },
    /// Replicate a Digest binding (`expires_ms` wall-clock; 0 removes it).
    Register {
        user: String,
        contact: String,
        route: String,
        expires_ms: u64,
    },
    Cdr(Box<Cdr>),
}

/// What the engine needs to know about its node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Raft node id (how the health view names this node).
    pub node_id: u64,
    pub node: String,
    pub zone: String,
    pub region: String,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The `tls:` listener, if the node has one.
    pub tls: Option<SocketAddr>,
    pub advertise: String,
    pub congestion_code: u16,
    pub upstream: Option<SocketAddr>,
    pub nonce_secret: String,
    pub nonce_lifetime_ms: u64,
    pub min_expires_s: u32,
    pub max_expires_s: u32,
    /// A forwarded INVITE with no answer at all (not even 100) from its egress node within this
    /// moves to the next node.
    pub forward_timeout_ms: u64,
    /// Seeds branch and tag generation (deterministic under simulation).
    pub seed: u64,
    /// Per-source rate limit, ban list and digest brute-force limits for untrusted sources.
    pub guard: hatrunk_core::guard::GuardLimits,
    /// Sources never rate-limited (besides IP-authenticated accounts, upstream and cluster nodes).
    pub trusted: Vec<ipnet::IpNet>,
    /// Server transactions at most; past it new requests get 503 with Retry-After.
    pub max_transactions: usize,
    /// Messages waiting to be processed past which new requests are refused at once with 503
    /// (RFC 7339's aim: shed early and cheaply instead of answering everything late).
    pub shed_backlog: usize,
    /// A new request that waited longer than this since it reached the host gets 503 at once.
    pub shed_wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// An attempt of a call.
    Call(u64, usize),
    /// A request relayed statefully for this server transaction; for a BYE of an earlier run's
    /// call, the slot kept for it (trunk, Call-ID), freed only if the far end answers 2xx.
    Relay(TxKey, Option<(String, String)>),
    Probe(String, Role),
    /// The BYE tearing down a late answer to cancelled call `id`: the PBX's leg is up until it is
    /// answered (or times out), so the slot held for the call goes only then.
    TearDown(u64),
    /// The attempt that answered a call: its 2xx retransmissions (our 2xx upstream or the caller's
    /// ACK was lost) go to the caller through this server transaction (RFC 6026), during the call
    /// and after it ended; a teardown BYE of ours would race the caller's own BYE (481).
    Answered(TxKey),
}

struct ServerEntry {
    tx: ServerTx,
    src: Src,
    last: Option<Bytes>,
    req: SipMessage,
    call: Option<u64>,
}

struct ClientEntry {
    tx: ClientTx,
    dest: Src,
    request: Bytes,
    ack: Option<Bytes>,
    owner: Owner,
}

/// The proxy state of one node.
pub struct Engine {
    cfg: EngineConfig,
    /// This node's name, zone and region, shared by every attempt record.
    here: (Arc<str>, Arc<str>, Arc<str>),
    store: Arc<dyn TrunkStore>,
    cluster: Arc<dyn ClusterView>,
    metrics: Arc<Metrics>,
    status: Arc<SharedStatus>,
    now: u64,
    seq: u64,
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    timer_keys: HashMap<u64, TimerKey>,
    call_timers: BinaryHeap<Reverse<timers::CallTimerEntry>>,
    servers: HashMap<TxKey, ServerEntry>,
    clients: HashMap<String, ClientEntry>,
    /// Boxed: the table is sized for the most calls ever in progress, so its slots stay small.
    calls: HashMap<u64, Box<Call>>,
    /// Calls that ended while their admission was pending: call id -> slot to give back.
    pending_release: HashMap<u64, String>,
    /// Egress: cancelled forwarded calls whose 487 waits for the PBX to be done with the attempt
    /// (call id -> the INVITE's server transaction): the ingress keeps its slot until it gets it.
    pending_final: HashMap<u64, TxKey>,
    dialogs: HashMap<Arc<str>, Dialog>,
    registrar: Registrar,
    rr: HashMap<String, RoundRobin>,
    /// Advanced HA round-robin turn per trunk.
    ha_turn: HashMap<String, u64>,
    nonces: NonceIssuer,
    guard: Guard,
    /// Messages queued behind the one being processed (an input, set by the runtime).
    backlog: usize,
    /// How long the message being processed waited since it reached the host (an input).
    waited_ms: u64,
    last_sweep: u64,
    out: Vec<Action>,
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        store: Arc<dyn TrunkStore>,
        cluster: Arc<dyn ClusterView>,
        metrics: Arc<Metrics>,
        status: Arc<SharedStatus>,
    ) -> Engine {
        let nonces = NonceIssuer::new(cfg.nonce_secret.clone(), cfg.nonce_lifetime_ms);
        Engine {
            here: (cfg.node.as_str().into(), cfg.zone.as_str().into(), cfg.region.as_str().into()),
            guard: Guard::new(cfg.guard),
            backlog: 0,
            waited_ms: 0,
            seq: cfg.seed,
            cfg,
            store,
            cluster,
            metrics,
            status,
            now: 0,
            timers: BinaryHeap::new(),
            timer_keys: HashMap::new(),
            call_timers: BinaryHeap::new(),
            servers: HashMap::new(),
            clients: HashMap::new(),
            calls: HashMap::new(),
            pending_release: HashMap::new(),
            pending_final: HashMap::new(),
            dialogs: HashMap::new(),
            registrar: Registrar::default(),
            rr: HashMap::new(),
            ha_turn: HashMap::new(),
            nonces,
            last_sweep: 0,
            out: Vec::new(),
        }
    }

    /// Take the actions produced so far.
    pub fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// A datagram or stream frame arrived.
    pub fn on_message(&mut self, inc: Incoming, now: u64) {
        self.now = now;
        let src = Src { proto: inc.proto, addr: inc.peer, conn: inc.conn };
        if self.guard.is_banned(src.addr.ip(), now) {
            // not even parsed; what it keeps sending keeps the ban running
            let _ = self.guard.new_request(src.addr.ip(), now);
            self.metrics.guard_drops.with_label_values(&["banned"]).inc();
            return;
        }
        match parse(&inc.bytes, inc.proto == Proto::Udp) {
            Ok(msg) if msg.is_request() => self.on_request(msg, src),
            Ok(msg) => self.on_response(msg),
            Err(e) => {
                if !self.admit_new_request(src) {
                    return;
                }
                self.on_malformed(&inc.bytes, e, src)
            }
        }
    }

    /// Nothing could be delivered to `addr`.
    pub fn on_unreachable(&mut self, proto: Proto, addr: SocketAddr, now: u64) {
        self.now = now;
        let hit: Vec<(String, Owner)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.dest.addr == addr && c.dest.proto == proto)
            .map(|(b, c)| (b.clone(), c.owner.clone()))
            .collect();
        // the table's order is per process (hashed); act in a fixed order so a run replays
        let mut hit = hit;
        hit.sort_by(|a, b| a.0.cmp(&b.0));
        for (branch, owner) in hit {
            self.clients.remove(&branch);
            match owner {
                Owner::Call(id, n) => self.attempt_unreachable(id, n),
                Owner::Relay(key, _) => self.respond_key(&key, 503, None),
                Owner::Probe(t, r) => self.probe_result(&t, r, false),
                Owner::TearDown(id) => self.release_held(id),
                Owner::Answered(_) => {}
            }
        }
    }

    /// Admission answered for `call`.
    pub fn on_admitted(&mut self, call: u64, decision: Result<Decision, String>, now: u64) {
        self.now = now;
        self.call_admitted(call, decision);
    }

    fn on_malformed(&mut self, bytes: &[u8], e: SipError, src: Src) {
        self.metrics.malformed.inc();
        tracing::debug!(peer = %src.addr, error = %e, "malformed SIP message");
        // Answer a request we can still address (a Via to reply to); drop responses and garbage.
        let status = match &e {
            SipError::Malformed { status, .. } => *status,
            _ => 400,
        };
        if let Some(reply) = build::error_reply(bytes, status, &e.to_string()) {
            self.send(src, reply);
        }
    }

    fn on_request(&mut self, mut msg: SipMessage, src: Src) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        self.metrics.requests.with_label_values(&[method.as_str()]).inc();
        stamp_received(&mut msg, src.addr);
        let key = TxKey::of(&msg);
        // retransmission, or ACK / CANCEL of an existing server transaction
        if method == Method::Ack {
            if let Some(e) = self.servers.get_mut(&key) {
                let fx = e.tx.on_ack();
                self.server_effects(&key, fx);
                return;
            }
            return self.route_in_dialog(msg, src);
        }
        if let Some(e) = self.servers.get_mut(&key) {
            let fx = e.tx.on_retransmission();
            self.server_effects(&key, fx);
            return;
        }
        if method == Method::Cancel {
            return self.on_cancel(msg, src);
        }
        let in_dialog = hatrunk_sip::headers::param(msg.header("To").unwrap_or(""), "tag").is_some();
        if !in_dialog && !self.admit_new_request(src) {
            return;
        }
        if self.overloaded(&msg, src, in_dialog) {
            return;
        }
        let kind = if method == Method::Invite { Kind::Invite } else { Kind::NonInvite };
        let tx = ServerTx::start(kind, src.proto.reliable());
        self.servers.insert(key.clone(), ServerEntry { tx, src, last: None, req: msg.clone(), call: None });
        let max_forwards = msg.header("Max-Forwards").and_then(|m| m.parse::<u8>().ok()).unwrap_or(70);
        if in_dialog {
            if max_forwards == 0 {
                return self.respond_key(&key, 483, None);
            }
            return self.relay_in_dialog(key, msg);
        }
        match method {
            Method::Invite => {
                if max_forwards == 0 {
                    return self.respond_key(&key, 483, None);
                }
                self.respond_key(&key, 100, None);
                self.on_invite(key, msg, src);
            }
            Method::Options => self.on_options(key, msg),
            Method::Register => self.on_register(key, msg, src),
            Method::Bye => self.respond_key(&key, 481, None),
            Method::Other(_) => self.respond_key(&key, 501, None),
            _ => self.respond_key(&key, 405, None),
        }
    }

    fn on_response(&mut self, mut msg: SipMessage) {
        let Some(code) = msg.code() else { return };
        let Some(branch) = msg.header("Via").and_then(|v| Via::parse(v).ok()).and_then(|v| v.branch().map(str::to_string)) else {
            return;
        };
        if msg.header("CSeq").is_some_and(|c| c.ends_with("CANCEL")) {
            return; // our CANCELs are sent once, hop by hop; their 200 needs nothing
        }
        let Some(entry) = self.clients.get_mut(&branch) else {
            self.metrics.stray_responses.inc();
            return;
        };
        let fx = entry.tx.on_response(code);
        let owner = entry.owner.clone();
        msg.pop("Via");
        let mut pass = false;
        for f in fx {
            match f {
                Effect::Pass => pass = true,
                Effect::SendAck => {
                    let (dest, ack) = match self.clients.get_mut(&branch) {
                        Some(e) => {
                            if e.ack.is_none() {
                                e.ack = Some(build::ack_for(&e.request, &msg));
                            }
                            (e.dest, e.ack.clone())
                        }
                        None => continue,
                    };
                    if let Some(ack) = ack {
                        self.send_bytes(dest, ack);
                    }
                }
                other => self.client_effect(&branch, other),
            }
        }
        if code >= 200 {
            if let Some(e) = self.clients.get_mut(&branch) {
                e.request = Bytes::new(); // its ACK is built; nothing is retransmitted after a final
            }
        }
        if !pass {
            return;
        }
        match owner {
            Owner::Call(id, n) => self.attempt_response(id, n, msg),
            Owner::Relay(key, kept) => self.relay_response(&key, kept, msg),
            Owner::Probe(t, r) => {
                if code >= 200 {
                    self.probe_result(&t, r, true)
                }
            }
            Owner::Answered(key) => {
                if (200..300).contains(&code) {
                    msg.remove_all(egress::REPORT_HEADER);
                    self.respond_msg(&key, msg);
                }
            }
            Owner::TearDown(id) if code >= 200 => self.release_held(id),
            Owner::TearDown(_) => {}
        }
    }

    // ---- transactions -------------------------------------------------------------------------

    fn server_effects(&mut self, key: &TxKey, fx: Vec<Effect>) {
        for f in fx {
            match f {
                Effect::Retransmit => {
                    if let Some((src, Some(b))) = self.servers.get(key).map(|e| (e.src, e.last.clone())) {
                        self.send_bytes(src, b);
                    }
                }
                Effect::Arm(t, ms) => self.arm(self.now + ms, TimerKey::Server(key.clone(), t)),
                Effect::Terminated => {
                    self.servers.remove(key);
                }
                _ => {}
            }
        }
    }

    fn client_effect(&mut self, branch: &str, f: Effect) {
        match f {
            Effect::Retransmit => {
                if let Some((d, b)) = self.clients.get(branch).map(|e| (e.dest, e.request.clone())) {
                    self.metrics.retransmissions.inc();
                    self.send_bytes(d, b);
                }
            }
            Effect::Arm(t, ms) => self.arm(self.now + ms, TimerKey::Client(branch.to_string(), t)),
            Effect::Timeout => {
                let owner = self.clients.get(branch).map(|e| e.owner.clone());
                match owner {
                    Some(Owner::Call(id, n)) => self.attempt_timeout(id, n),
                    Some(Owner::Relay(key, _)) => self.respond_key(&key, 408, None),
                    Some(Owner::Probe(t, r)) => self.probe_result(&t, r, false),
                    Some(Owner::TearDown(id)) => self.release_held(id),
                    _ => {}
                }
            }
            Effect::Terminated => {
                self.clients.remove(branch);
            }
            _ => {}
        }
    }

    /// Send a request through a new client transaction; returns its branch.
    fn start_client(&mut self, mut req: SipMessage, dest: Src, owner: Owner) -> String {
        let branch = self.branch();
        let via = format!("SIP/2.0/{} {};branch={branch}", dest.proto.via_name(), self.hostport(dest.proto));
        req.push_front("Via", via);
        if req.header("Via").is_none() {
            return branch;
        }
        let kind = if req.method() == Some(&Method::Invite) { Kind::Invite } else { Kind::NonInvite };
        let bytes = req.to_bytes();
        self.send_bytes(dest, bytes.clone());
        let (tx, fx) = ClientTx::start(kind, dest.proto.reliable());
        self.clients.insert(branch.clone(), ClientEntry { tx, dest, request: bytes, ack: None, owner });
        for f in fx {
            self.client_effect(&branch, f);
        }
        branch
    }

    /// Answer the server transaction `key` with `code`.
    fn respond_key(&mut self, key: &TxKey, code: u16, reason_hdr: Option<&str>) {
        let Some(req) = self.servers.get(key).map(|e| e.req.clone()) else {
            return;
        };
        let tag = (code > 100).then(|| self.tag());
        let mut r = build::response(&req, code, tag.as_deref());
        if let Some(reason) = reason_hdr {
            r.push("Reason", reason);
        }
        self.respond_msg(key, r);
    }

    /// Send `resp` through server transaction `key` (recorded for retransmission).
    fn respond_msg(&mut self, key: &TxKey, resp: SipMessage) {
        let Some(code) = resp.code() else { return };
        let bytes = resp.to_bytes();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let fx = e.tx.on_send(code);
        // after a final response only retransmissions are matched: the request is not needed, and
        // an INVITE's 2xx is never retransmitted by a proxy (the UAS does), so nothing is kept for
        // it; any other final (a BYE's 200 too) answers the request's retransmissions
        let invite_2xx = e.tx.kind == hatrunk_sip::transaction::Kind::Invite && (200..300).contains(&code);
        e.last = (!invite_2xx).then(|| bytes.clone());
        if code >= 200 {
            e.req = SipMessage::request(Method::Ack, String::new());
        }
        let src = e.src;
        self.metrics.responses.with_label_values(&[&code.to_string()]).inc();
        self.send_bytes(src, bytes);
        self.server_effects(key, fx);
    }

    fn send(&mut self, to: Src, msg: SipMessage) {
        self.send_bytes(to, msg.to_bytes());
    }

    fn send_bytes(&mut self, to: Src, bytes: Bytes) {
        self.out.push(Action::Send { proto: to.proto, addr: to.addr, conn: to.conn, bytes });
    }

    fn branch(&mut self) -> String {
        self.seq = self.seq.wrapping_add(1);
        format!("z9hG4bK{:x}{:08x}", self.cfg.seed & 0xffff_ffff, self.seq)
    }

    fn tag(&mut self) -> String {
        self.seq = self.seq.wrapping_add(1);
        format!("ht{:x}", self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16)
    }
}

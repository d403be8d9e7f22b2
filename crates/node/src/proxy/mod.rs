//! The SIP proxy core: a transaction-stateful, record-routing proxy (RFC 3261 section 16) whose every
//! decision is made synchronously from `(state, event, now)`; what must happen outside (send bytes,
//! ask admission, write a CDR) comes out as [`Action`]s. The driver ([`crate::runtime`]) feeds it
//! socket events, admission answers and timer ticks, so the same engine can run under turmoil.
//!
//! Files: `mod.rs` the engine and the dispatch of each event; the parts that own state:
//! `transactions.rs` the server and client transactions in flight, `output.rs` the actions, the
//! timers (their kinds and heaps) and the sequence naming calls, branches and tags, `calls.rs` the calls in progress;
//! `context.rs` what a handler borrows besides its part (`Cx`) and the node's own addresses;
//! `timers.rs` what each timer does and the per-tick upkeep. The call path's handlers are `Calls`
//! methods taking a `Cx`: `call.rs` the inbound/outbound INVITE path (modes, admission, attempts),
//! `call/attempt.rs` an attempt's responses and failover; `cancel.rs` CANCEL and late answers; `egress.rs` Advanced HA forwarding
//! between nodes; `dialog.rs` in-dialog routing; `registrar.rs` REGISTER; `auth.rs` digest checks;
//! `probe.rs` OPTIONS answered and health probing; `members.rs` the OPTIONS that tell whether
//! the other members' SIP answers; `guard.rs` per-source limits, bans and the
//! transaction limit. What a proxy builds itself (responses, ACK, CANCEL, error replies) and the
//! transaction key live in `hatrunk-sip`. `docs/call-path.md` walks one call through them.

mod account_rules;
mod auth;
mod call;
mod calls;
mod cancel;
mod catch_up;
mod context;
mod dialog;
mod egress;
mod flow;
mod forward_sig;
mod guard;
mod members;
mod output;
mod probe;
mod registrar;
mod second_slot;
mod session;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_catch_up;
#[cfg(test)]
mod tests_dns;
#[cfg(test)]
mod tests_egress;
#[cfg(test)]
mod tests_flow;
#[cfg(test)]
mod tests_guard;
#[cfg(test)]
mod tests_moves;
#[cfg(test)]
mod tests_rules;
#[cfg(test)]
mod tests_time;
mod timers;
mod transactions;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hatrunk_core::cdr::Cdr;
use hatrunk_core::guard::Guard;
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;
use hatrunk_core::trunk::Role;
use hatrunk_sip::build::{self, stamp_received};
use hatrunk_sip::digest::NonceIssuer;
use hatrunk_sip::parse::parse;
use hatrunk_sip::transaction::{Effect, TxKey};
use hatrunk_sip::transport::{Incoming, Proto};
use hatrunk_sip::{Method, SipError, SipMessage};

use crate::cluster_health::ClusterView;
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

pub use calls::Call;
use calls::Calls;
use context::cx;
use output::Output;
use output::{CallTimer, TimerKey};
use registrar::Registrar;
use transactions::Transactions;

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Src {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub conn: Option<u64>,
}

/// Where a SIP URI with a literal IP host is reached (DNS is not used on the call path).
pub(super) fn uri_dest(uri: &str) -> Option<Src> {
    let u = hatrunk_sip::headers::SipUri::parse(uri).ok()?;
    let ip: IpAddr = u.host.trim_matches(['[', ']']).parse().ok()?;
    let proto = match u.param("transport") {
        _ if u.scheme == "sips" => Proto::Tls,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Proto::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Proto::Tls,
        _ => Proto::Udp,
    };
    let default_port = if proto == Proto::Tls { 5061 } else { 5060 };
    Some(Src { proto, addr: SocketAddr::new(ip, u.port.unwrap_or(default_port)), conn: None })
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
        slot: SlotId,
        /// The trunk's calls-per-second limit: a token of its rate pool first (`core::cps`).
        cps: Option<u32>,
    },
    Release {
        slot: SlotId,
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

/// The carrier outbound calls go to: an address, or a name resolved by RFC 3263 like a PBX's
/// (SRV `_sip._udp` without a port, else A/AAAA), kept resolved by `dns.rs`.
#[derive(Debug, Clone)]
pub enum Upstream {
    Addr(SocketAddr),
    Name(crate::dns::DnsKey),
}

impl Upstream {
    /// `upstream.target` as the node file gives it.
    pub fn parse(target: &str) -> Result<Upstream, String> {
        let st = hatrunk_core::trunk::parse_sip_target(target)?;
        if st.sips {
            return Err("the upstream is reached over UDP; sips: is not supported there".into());
        }
        Ok(match st.host.parse::<std::net::IpAddr>() {
            Ok(ip) => Upstream::Addr(SocketAddr::new(ip, st.port)),
            Err(_) => Upstream::Name(crate::dns::DnsKey::of(&st, hatrunk_core::trunk::Transport::Udp)),
        })
    }
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
    /// This node's host in the URIs and Vias it writes (an IPv6 literal in brackets).
    pub advertise: String,
    pub congestion_code: u16,
    /// The carrier outbound calls go to.
    pub upstream: Option<Upstream>,
    pub nonce_secret: String,
    pub nonce_lifetime_ms: u64,
    pub min_expires_s: u32,
    pub max_expires_s: u32,
    /// Bindings behind NAT expire after this at most (`flow.rs`).
    pub nat_max_expires_s: u32,
    /// Keep-alives to bindings behind NAT this often; 0: none.
    pub nat_keepalive_ms: u64,
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
    /// A new request that waited longer than this since it reached the host gets 503, once new
    /// requests have stood that late for an interval (`hatrunk_sip::standing`).
    pub shed_wait_ms: u64,
    /// How often every other SIP member gets an OPTIONS (`[cluster] ping_interval_ms`; 0: never).
    pub member_probe_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// An attempt of a call.
    Call(u64, usize),
    /// A request relayed statefully for this server transaction; for a BYE, the slot it frees
    /// once the far end has it (`dialog::Kept`).
    Relay(TxKey, Option<dialog::Kept>),
    Probe(String, Role),
    /// The BYE tearing down a late answer to cancelled call `id`: the PBX's leg is up until it is
    /// answered (or times out), so the slot held for the call goes only then.
    TearDown(u64, usize),
    /// The attempt that answered a call: its 2xx retransmissions (our 2xx upstream or the caller's
    /// ACK was lost) go to the caller through this server transaction (RFC 6026), during the call
    /// and after it ended; a teardown BYE of ours would race the caller's own BYE (481).
    Answered(TxKey),
    /// A request of ours whose answer changes nothing (the BYEs ending an expired session).
    Notice,
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
    /// Actions, timers and the sequence that names things.
    io: Output,
    tx: Transactions,
    calls: Calls,
    registrar: Registrar,
    nonces: NonceIssuer,
    guard: Guard,
    /// Messages queued behind the one being processed (an input, set by the runtime).
    backlog: usize,
    /// How long the message being processed waited since it reached the host (an input).
    waited_ms: u64,
    /// Whether new requests have stood late (`hatrunk_sip::standing`): one stall is not a queue.
    standing: hatrunk_sip::standing::Standing,
    last_sweep: u64,
    /// Shedding and per-trunk failover storms, logged when they start and stop (`guard.rs`).
    episodes: guard::Episodes,
    /// When the members get their next OPTIONS, and the sequence numbering them.
    next_member_probe: u64,
    member_seq: u64,
    dns: Arc<crate::dns::DnsCache>,
    /// Forwarded INVITEs waiting for a trunk this member has not applied yet (`catch_up.rs`).
    catch_up: catch_up::CatchUp,
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
            standing: Default::default(),
            io: Output::new(cfg.seed),
            tx: Transactions::default(),
            cfg,
            store,
            cluster,
            metrics,
            status,
            now: 0,
            calls: Calls::default(),
            registrar: Registrar::default(),
            nonces,
            last_sweep: 0,
            episodes: Default::default(),
            next_member_probe: 0,
            member_seq: 0,
            dns: Arc::default(),
            catch_up: Default::default(),
        }
    }

    /// Read PBX targets given by name from `dns` (kept resolved by [`crate::dns::keep_resolved`]).
    pub fn with_dns(mut self, dns: Arc<crate::dns::DnsCache>) -> Engine {
        self.dns = dns;
        self
    }

    /// Take the actions produced so far.
    pub fn drain(&mut self) -> Vec<Action> {
        self.io.drain()
    }

    /// A datagram or stream frame arrived.
    pub fn on_message(&mut self, inc: Incoming, now: u64) {
        self.now = now;
        let src = Src { proto: inc.proto, addr: inc.peer, conn: inc.conn };
        // (only the cheap checks: a banned flood must stay cheap to drop; members are never banned)
        if self.guard.is_banned(src.addr.ip(), now) && !self.trusted_peer(src.addr.ip()) {
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
        for (branch, owner) in self.tx.to_addr(proto, addr) {
            self.tx.clients.remove(&branch);
            self.client_failed(owner, true);
        }
    }

    /// Admission answered for `call`.
    pub fn on_admitted(&mut self, call: u64, decision: Result<Decision, String>, now: u64) {
        self.now = now;
        if !self.calls.second_admitted(&mut cx!(self), call, &decision) {
            self.calls.call_admitted(&mut cx!(self), call, decision);
        }
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
            if self.tx.server_again(&key, true, self.now, &mut self.io) {
                return;
            }
            return dialog::route_ack(&mut cx!(self), msg, src);
        }
        if self.tx.server_again(&key, false, self.now, &mut self.io) {
            return;
        }
        if method == Method::Cancel {
            self.calls.on_cancel(&mut cx!(self), msg, src);
            // an INVITE still waiting for its trunk has no call yet to cancel
            self.cancel_parked(&key.with_method("INVITE"));
            return;
        }
        let in_dialog = hatrunk_sip::headers::param(msg.header("To").unwrap_or(""), "tag").is_some();
        if !in_dialog && !self.admit_new_request(src) {
            return;
        }
        if self.overloaded(&msg, src, in_dialog) {
            return;
        }
        self.tx.open_server(key.clone(), msg.clone(), src);
        let max_forwards = msg.header("Max-Forwards").and_then(|m| m.parse::<u8>().ok()).unwrap_or(70);
        if in_dialog {
            if max_forwards == 0 {
                return self.respond_key(&key, 483, None);
            }
            return self.calls.relay_in_dialog(&mut cx!(self), key, msg, src);
        }
        let mut msg = msg;
        if method == Method::Invite && self.relay_to_flow(&key, &mut msg, src) {
            return;
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
        let Some(branch) = transactions::top_branch(&msg) else {
            return;
        };
        if msg.header("CSeq").is_some_and(|c| c.ends_with("CANCEL")) {
            return; // our CANCELs are sent once, hop by hop; their 200 needs nothing
        }
        if self.member_answer(&branch) {
            return;
        }
        let Some(r) = self.tx.on_response(&branch, &msg, code, self.now, &mut self.io, &self.metrics) else {
            self.metrics.stray_responses.inc();
            return;
        };
        msg.pop("Via");
        for owner in r.timeouts {
            self.client_failed(owner, false);
        }
        if !r.pass {
            return;
        }
        let owner = r.owner;
        match owner {
            Owner::Call(id, n) => self.calls.attempt_response(&mut cx!(self), id, n, msg),
            Owner::Relay(key, kept) => {
                let refresh = matches!(msg.header("CSeq").and_then(|c| c.split_whitespace().nth(1)), Some("INVITE" | "UPDATE"));
                if refresh && (200..300).contains(&code) {
                    if let Some(id) = msg.header("Call-ID").and_then(|c| self.calls.by_dialog(c)) {
                        self.calls.session_refreshed(&mut cx!(self), id, &msg);
                    }
                }
                dialog::relay_response(&mut cx!(self), &key, kept, msg)
            }
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
            Owner::TearDown(id, n) if code >= 200 => self.calls.settle_attempt(&mut cx!(self), id, n),
            Owner::TearDown(..) | Owner::Notice => {}
        }
    }

    // ---- transactions -------------------------------------------------------------------------

    /// Carry out one effect of client transaction `branch`; a timeout goes to its owner.
    fn client_effect(&mut self, branch: &str, f: Effect) {
        if let Some(owner) = self.tx.client_effect(branch, f, self.now, &mut self.io, &self.metrics) {
            self.client_failed(owner, false);
        }
    }

    /// A client transaction of `owner` ended without a final response: nothing could be delivered
    /// (`unreachable`), or Timer B or F fired.
    fn client_failed(&mut self, owner: Owner, unreachable: bool) {
        match owner {
            Owner::Call(id, n) if unreachable => self.calls.attempt_unreachable(&mut cx!(self), id, n),
            Owner::Call(id, n) => self.calls.attempt_timeout(&mut cx!(self), id, n),
            Owner::Relay(key, kept) => dialog::relay_failed(&mut cx!(self), &key, kept, unreachable),
            Owner::Probe(t, r) => self.probe_result(&t, r, false),
            Owner::TearDown(id, n) => self.calls.settle_attempt(&mut cx!(self), id, n),
            Owner::Answered(_) | Owner::Notice => {}
        }
    }

    /// Send a request through a new client transaction; returns its branch.
    fn start_client(&mut self, req: SipMessage, dest: Src, owner: Owner) -> String {
        cx!(self).start_client(req, dest, owner)
    }

    /// Answer the server transaction `key` with `code`.
    fn respond_key(&mut self, key: &TxKey, code: u16, reason_hdr: Option<&str>) {
        cx!(self).respond_key(key, code, reason_hdr)
    }

    /// Send `resp` through server transaction `key` (recorded for retransmission).
    fn respond_msg(&mut self, key: &TxKey, resp: SipMessage) {
        cx!(self).respond_msg(key, resp)
    }

    fn send(&mut self, to: Src, msg: SipMessage) {
        self.io.send(to, msg.to_bytes());
    }

    /// Calls being set up through a node the detector now says is down move on, and forwarded calls
    /// whose ingress it says is down are cancelled (`egress.rs`). Run a few times a second.
    pub fn check_egress(&mut self, now: u64) {
        self.now = now;
        self.probe_members();
        self.calls.check_egress(&mut cx!(self));
        self.calls.check_ingress(&mut cx!(self));
    }

    /// How often the runtime should call [`Engine::check_egress`] (ms).
    pub fn check_every_ms(&self) -> u64 {
        match self.cfg.member_probe_ms {
            0 => 200,
            ms => ms.clamp(10, 200),
        }
    }
}

/// A table keeps the capacity of its busiest moment; give most of it back once a burst is over
/// (64,000 transactions alive at 2,000 calls/s for their 32 s would otherwise hold that memory).
fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 4 * m.len() + 1024 {
        m.shrink_to(2 * m.len());
    }
}

//! The proxy's transactions in flight: server transactions (requests we answer, by [`TxKey`]) and
//! client transactions (requests we sent, by branch), driven by the RFC 3261 state machines of
//! `hatrunk_sip::transaction`. This part keeps what to retransmit and arms their timers; who owns a
//! client transaction ([`Owner`]) is what the engine hands a response or a timeout to.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use hatrunk_sip::build;
use hatrunk_sip::headers::Via;
use hatrunk_sip::transaction::{ClientTx, Effect, Kind, ServerTx, Timer, TxKey};
use hatrunk_sip::transport::Proto;
use hatrunk_sip::{Method, SipMessage};

use super::output::Output;
use super::output::TimerKey;
use super::{Owner, Src};
use crate::metrics::Metrics;

pub(super) struct ServerEntry {
    pub(super) tx: ServerTx,
    pub(super) src: Src,
    /// The last response, for the request's retransmissions.
    last: Option<Bytes>,
    /// The request, until a final response was sent.
    pub(super) req: SipMessage,
    /// The call an INVITE started.
    pub(super) call: Option<u64>,
}

pub(super) struct ClientEntry {
    tx: ClientTx,
    pub(super) dest: Src,
    /// As sent, for retransmission and to build its ACK or CANCEL; emptied after a final response.
    pub(super) request: Bytes,
    ack: Option<Bytes>,
    pub(super) owner: Owner,
    /// Abandoned before any provisional response: no more retransmissions, but still matched
    /// (a late 1xx is CANCELled, a late 2xx torn down) until Timer B ends it.
    muted: bool,
}

#[derive(Default)]
pub(super) struct Transactions {
    pub(super) servers: HashMap<TxKey, ServerEntry>,
    pub(super) clients: HashMap<String, ClientEntry>,
}

/// What a response to one of our requests means for its owner.
pub(super) struct ClientResponse {
    pub(super) owner: Owner,
    /// The transaction passes it up (not a retransmission it absorbed).
    pub(super) pass: bool,
    /// Owners whose transactions timed out while handling it.
    pub(super) timeouts: Vec<Owner>,
}

impl Transactions {
    /// Start a server transaction for `req` from `src`.
    pub(super) fn open_server(&mut self, key: TxKey, req: SipMessage, src: Src) {
        let kind = if req.method() == Some(&Method::Invite) { Kind::Invite } else { Kind::NonInvite };
        let tx = ServerTx::start(kind, src.proto.reliable());
        self.servers.insert(key, ServerEntry { tx, src, last: None, req, call: None });
    }

    /// A request that matches server transaction `key` (a retransmission, or the ACK of a final
    /// response); false when none matches.
    pub(super) fn server_again(&mut self, key: &TxKey, ack: bool, now: u64, io: &mut Output) -> bool {
        let Some(e) = self.servers.get_mut(key) else {
            return false;
        };
        let fx = if ack { e.tx.on_ack() } else { e.tx.on_retransmission() };
        self.server_effects(key, fx, now, io);
        true
    }

    fn server_effects(&mut self, key: &TxKey, fx: Vec<Effect>, now: u64, io: &mut Output) {
        for f in fx {
            match f {
                Effect::Retransmit => {
                    if let Some((src, Some(b))) = self.servers.get(key).map(|e| (e.src, e.last.clone())) {
                        io.send(src, b);
                    }
                }
                Effect::Arm(t, ms) => io.arm(now + ms, TimerKey::Server(key.clone(), t)),
                Effect::Terminated => {
                    self.servers.remove(key);
                }
                _ => {}
            }
        }
    }

    /// One effect of client transaction `branch`; a timeout is returned with the owner to tell.
    pub(super) fn client_effect(&mut self, branch: &str, f: Effect, now: u64, io: &mut Output, metrics: &Metrics) -> Option<Owner> {
        match f {
            Effect::Retransmit => {
                if let Some((d, b)) = self.clients.get(branch).filter(|e| !e.muted).map(|e| (e.dest, e.request.clone())) {
                    metrics.retransmissions.inc();
                    io.send(d, b);
                }
            }
            Effect::Arm(t, ms) => io.arm(now + ms, TimerKey::Client(branch.to_string(), t)),
            Effect::Timeout => return self.clients.get(branch).map(|e| e.owner.clone()),
            Effect::Terminated => {
                self.clients.remove(branch);
            }
            _ => {}
        }
        None
    }

    /// Stop retransmitting `branch`'s request: the call moved on from a destination that never
    /// answered, and each copy would be one more chance of it answering a call that is elsewhere
    /// by now (a second dialog at the PBX). A proxy may not CANCEL before a provisional response
    /// (RFC 3261 section 9.1); Kamailio's tm stops retransmitting on its fr_timer likewise.
    pub(super) fn mute(&mut self, branch: &str) {
        if let Some(e) = self.clients.get_mut(branch) {
            e.muted = true;
        }
    }

    /// A timer of server transaction `key` fired.
    pub(super) fn server_timer(&mut self, key: &TxKey, t: Timer, now: u64, io: &mut Output) {
        if let Some(e) = self.servers.get_mut(key) {
            let fx = e.tx.on_timer(t);
            self.server_effects(key, fx, now, io);
        }
    }

    /// A timer of client transaction `branch` fired: its effects, for the caller to carry out in
    /// order through [`Transactions::client_effect`] (a timeout among them is the owner's to hear).
    pub(super) fn client_timer(&mut self, branch: &str, t: Timer) -> Vec<Effect> {
        self.clients.get_mut(branch).map(|e| e.tx.on_timer(t)).unwrap_or_default()
    }

    /// Send `req` to `dest` through a new client transaction whose Via names `hostport`; returns
    /// its branch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_client(
        &mut self,
        mut req: SipMessage,
        dest: Src,
        owner: Owner,
        hostport: &str,
        now: u64,
        io: &mut Output,
        metrics: &Metrics,
    ) -> String {
        let branch = io.branch();
        req.push_front("Via", format!("SIP/2.0/{} {hostport};branch={branch}", dest.proto.via_name()));
        if req.header("Via").is_none() {
            return branch;
        }
        let kind = if req.method() == Some(&Method::Invite) { Kind::Invite } else { Kind::NonInvite };
        let bytes = req.to_bytes();
        io.send(dest, bytes.clone());
        let (tx, fx) = ClientTx::start(kind, dest.proto.reliable());
        self.clients.insert(branch.clone(), ClientEntry { tx, dest, request: bytes, ack: None, owner, muted: false });
        for f in fx {
            // a transaction just started neither times out nor terminates
            let _ = self.client_effect(&branch, f, now, io, metrics);
        }
        branch
    }

    /// A response to server transaction `key`'s request, with a new To tag unless it is a 100.
    pub(super) fn response(&self, key: &TxKey, code: u16, io: &mut Output) -> Option<SipMessage> {
        let req = &self.servers.get(key)?.req;
        let tag = (code > 100).then(|| io.tag());
        Some(build::response(req, code, tag.as_deref()))
    }

    /// Send `resp` through server transaction `key` (kept for the request's retransmissions).
    pub(super) fn respond(&mut self, key: &TxKey, resp: SipMessage, now: u64, io: &mut Output, metrics: &Metrics) {
        let Some(code) = resp.code() else { return };
        let bytes = resp.to_bytes();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let fx = e.tx.on_send(code);
        // after a final response only retransmissions are matched: the request is not needed, and
        // an INVITE's 2xx is never retransmitted by a proxy (the UAS does), so nothing is kept for
        // it; any other final (a BYE's 200 too) answers the request's retransmissions
        let invite_2xx = e.tx.kind == Kind::Invite && (200..300).contains(&code);
        e.last = (!invite_2xx).then(|| bytes.clone());
        if code >= 200 {
            e.req = SipMessage::request(Method::Ack, String::new());
        }
        let src = e.src;
        metrics.responses.with_label_values(&[&code.to_string()]).inc();
        io.send(src, bytes);
        self.server_effects(key, fx, now, io);
    }

    /// A response to one of our requests, its top Via already read: ACK a non-2xx final (hop by
    /// hop), arm or stop retransmissions, and say whose it is. `None` for a stray response.
    pub(super) fn on_response(
        &mut self,
        branch: &str,
        msg: &SipMessage,
        code: u16,
        now: u64,
        io: &mut Output,
        metrics: &Metrics,
    ) -> Option<ClientResponse> {
        let entry = self.clients.get_mut(branch)?;
        let fx = entry.tx.on_response(code);
        let owner = entry.owner.clone();
        let mut pass = false;
        let mut timeouts = Vec::new();
        for f in fx {
            match f {
                Effect::Pass => pass = true,
                Effect::SendAck => {
                    let Some(e) = self.clients.get_mut(branch) else { continue };
                    if e.ack.is_none() {
                        e.ack = Some(build::ack_for(&e.request, msg));
                    }
                    if let Some(ack) = e.ack.clone() {
                        io.send(e.dest, ack);
                    }
                }
                other => timeouts.extend(self.client_effect(branch, other, now, io, metrics)),
            }
        }
        if code >= 200 {
            if let Some(e) = self.clients.get_mut(branch) {
                e.request = Bytes::new(); // its ACK is built; nothing is retransmitted after a final
            }
        }
        Some(ClientResponse { owner, pass, timeouts })
    }

    /// The client transactions to `addr`, with their owners, in branch order (the table's own
    /// order is per process, and a run must replay).
    pub(super) fn to_addr(&self, proto: Proto, addr: SocketAddr) -> Vec<(String, Owner)> {
        let mut hit: Vec<(String, Owner)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.dest.addr == addr && c.dest.proto == proto)
            .map(|(b, c)| (b.clone(), c.owner.clone()))
            .collect();
        hit.sort_by(|a, b| a.0.cmp(&b.0));
        hit
    }

    /// Give back the memory of a burst.
    pub(super) fn shrink(&mut self) {
        super::shrink_map(&mut self.servers);
        super::shrink_map(&mut self.clients);
    }
}

/// The branch of a response's top Via (ours, if the response is for us).
pub(super) fn top_branch(msg: &SipMessage) -> Option<String> {
    msg.header("Via").and_then(|v| Via::parse(v).ok()).and_then(|v| v.branch().map(str::to_string))
}

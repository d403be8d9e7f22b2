//! What a handler borrows besides the part whose state it changes: the node's configuration and
//! shared handles, the time of the event, the output and the transactions in flight. And the node's
//! own addresses: what is us in a Route or Request-URI, what we write in Via and Record-Route, which
//! senders are cluster members. [`cx!`] builds one from the engine field by field, so the part a
//! handler works on (the calls, say) stays free to borrow mutably beside it.

use std::sync::Arc;

use hatrunk_sip::headers::{addr_uri, SipUri};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::SipMessage;

use super::output::Output;
use super::registrar::Registrar;
use super::transactions::Transactions;
use super::{uri_dest, EngineConfig, Owner, Src};
use crate::cluster_health::ClusterView;
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

/// The Record-Route parameter naming the boot of the node that holds the call's slot, and the
/// trunk: `ht=<boot>.<trunk>`.
pub(super) const HT_PARAM: &str = "ht";

pub(super) struct Cx<'a> {
    pub(super) cfg: &'a EngineConfig,
    /// This node's name, zone and region, shared by every attempt record.
    pub(super) here: &'a (Arc<str>, Arc<str>, Arc<str>),
    pub(super) store: &'a dyn TrunkStore,
    pub(super) cluster: &'a dyn ClusterView,
    pub(super) metrics: &'a Metrics,
    pub(super) status: &'a SharedStatus,
    pub(super) registrar: &'a Registrar,
    /// PBX targets given by name, as last resolved.
    pub(super) dns: &'a crate::dns::DnsCache,
    pub(super) now: u64,
    pub(super) io: &'a mut Output,
    pub(super) tx: &'a mut Transactions,
    pub(super) episodes: &'a mut super::guard::Episodes,
}

/// The [`Cx`] of an engine, its fields borrowed one by one.
macro_rules! cx {
    ($e:expr) => {
        $crate::proxy::context::Cx {
            cfg: &$e.cfg,
            here: &$e.here,
            store: &*$e.store,
            cluster: &*$e.cluster,
            metrics: &$e.metrics,
            status: &$e.status,
            registrar: &$e.registrar,
            dns: &*$e.dns,
            now: $e.now,
            io: &mut $e.io,
            tx: &mut $e.tx,
            episodes: &mut $e.episodes,
        }
    };
}
pub(super) use cx;

impl Cx<'_> {
    /// Answer the server transaction `key` with `code`.
    pub(super) fn respond_key(&mut self, key: &TxKey, code: u16, reason_hdr: Option<&str>) {
        let Some(mut r) = self.tx.response(key, code, self.io) else {
            return;
        };
        if let Some(reason) = reason_hdr {
            r.push("Reason", reason);
        }
        self.respond_msg(key, r);
    }

    /// Send `resp` through server transaction `key` (recorded for retransmission).
    pub(super) fn respond_msg(&mut self, key: &TxKey, resp: SipMessage) {
        self.tx.respond(key, resp, self.now, self.io, self.metrics);
    }

    /// Send a request through a new client transaction; returns its branch.
    pub(super) fn start_client(&mut self, req: SipMessage, dest: Src, owner: Owner) -> String {
        let hostport = self.hostport(dest.proto);
        self.tx.start_client(req, dest, owner, &hostport, self.now, self.io, self.metrics)
    }

    pub(super) fn send(&mut self, to: Src, msg: SipMessage) {
        self.io.send(to, msg.to_bytes());
    }

    /// CANCEL the client transaction `branch` (same branch as its INVITE), if it is still there.
    pub(super) fn cancel_branch(&mut self, branch: &str) {
        if let Some((dest, req)) = self.tx.clients.get(branch).map(|e| (e.dest, e.request.clone())) {
            if let Some(c) = hatrunk_sip::build::cancel_for(&req) {
                self.send(dest, c);
            }
        }
    }

    /// This run of the node, as [`HT_PARAM`] names it.
    pub(super) fn boot(&self) -> String {
        format!("{:x}", self.cfg.seed & 0xffff_ffff)
    }

    /// `<boot>.<trunk>` for this run of the node.
    pub(super) fn boot_tag(&self, trunk: &str) -> String {
        format!("{}.{trunk}", self.boot())
    }

    /// Remove the top Route entries that name this node (RFC 3261 section 16.4). Returns the
    /// [`HT_PARAM`] our entry carried, if any, and the flow it named (`flow.rs`), if any.
    pub(super) fn pop_own_routes(&self, msg: &mut SipMessage) -> (Option<String>, Option<Src>) {
        let (mut ht, mut flow) = (None, None);
        while let Some(top) = msg.header("Route").map(|r| addr_uri(r).to_string()) {
            match SipUri::parse(&top) {
                Ok(u) if self.is_us(&u) => {
                    ht = ht.or_else(|| u.param(HT_PARAM).map(str::to_string));
                    flow = flow.or_else(|| u.user.as_deref().and_then(super::flow::parse));
                    msg.pop("Route");
                }
                _ => break,
            }
        }
        (ht, flow)
    }

    /// Record-Route this node into `m` (RFC 3261 section 16.6): one entry, or one per side when the
    /// transports differ (RFC 5658 double record-routing); `params` follow `;lr`.
    pub(super) fn record_route(&self, m: &mut SipMessage, inbound: Proto, outbound: Proto, params: &str) {
        let rr = |p: Proto| format!("<sip:{}{};lr{params}>", self.hostport(p), p.uri_param());
        if inbound != outbound {
            m.push_front("Record-Route", rr(inbound));
        }
        m.push_front("Record-Route", rr(outbound));
    }

    /// This node's `host:port` for `proto`, as written in Via and Record-Route.
    pub(super) fn hostport(&self, proto: Proto) -> String {
        let port = match proto {
            Proto::Udp => self.cfg.udp.port(),
            Proto::Tcp => self.cfg.tcp.port(),
            Proto::Tls => self.cfg.tls.unwrap_or(self.cfg.tcp).port(),
        };
        format!("{}:{port}", self.cfg.advertise)
    }

    /// Whether a URI (a Route entry or Request-URI) points at this node.
    pub(super) fn is_us(&self, uri: &SipUri) -> bool {
        let port = uri.port.unwrap_or(5060);
        let host_ok =
            uri.host == self.cfg.advertise || uri.host == self.cfg.udp.ip().to_string() || uri.host == self.cfg.tcp.ip().to_string();
        host_ok && (port == self.cfg.udp.port() || port == self.cfg.tcp.port() || self.cfg.tls.is_some_and(|t| t.port() == port))
    }

    /// The next hop: the top Route if any (loose routing), else the Request-URI. Never this node
    /// (call after [`Cx::pop_own_routes`]): a request sent to ourselves would come back with
    /// one more Via, hop after hop, until Max-Forwards ran out.
    pub(super) fn next_hop(&self, msg: &SipMessage) -> Option<Src> {
        let uri = match msg.header("Route") {
            Some(r) => addr_uri(r).to_string(),
            None => msg.uri()?.to_string(),
        };
        if SipUri::parse(&uri).is_ok_and(|u| self.is_us(&u)) {
            return None;
        }
        uri_dest(&uri)
    }

    /// Whether `src` is a cluster member's SIP socket (the only sender whose forwarding we honour).
    pub(super) fn member_at(&self, src: Src) -> Option<String> {
        member_at(self.cluster, self.cfg.node_id, self.now, src)
    }
}

/// The member (other than `me`) whose SIP socket is `src`, by name.
pub(super) fn member_at(cluster: &dyn ClusterView, me: u64, now: u64, src: Src) -> Option<String> {
    let view = cluster.view(now);
    view.by_sip_addr(&src.addr.to_string()).filter(|m| m.member.id != me).map(|m| m.member.name.clone())
}

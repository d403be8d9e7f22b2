//! In-dialog requests (RFC 3261 section 16.12 loose routing): ACK for 2xx forwarded statelessly,
//! everything else (BYE, re-INVITE, INFO, UPDATE...) relayed through a transaction. A BYE ends the
//! call's accounting: its slot goes back and its CDR is written. Calls whose BYE never comes are
//! cleared by the trunk's `max_call_duration_s` safety timer.

use std::net::{IpAddr, SocketAddr};

use hatrunk_core::cdr::{Cause, Disposition};
use hatrunk_sip::headers::{addr_uri, SipUri};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::{Method, SipMessage};

use super::{Action, Engine, Owner, Src};

/// The Record-Route parameter naming the boot of the node that holds the call's slot, and the
/// trunk: `ht=<boot>.<trunk>`.
pub(super) const HT_PARAM: &str = "ht";

impl Engine {
    /// ACK for a 2xx (no server transaction): forward statelessly along the route set.
    pub(super) fn route_in_dialog(&mut self, mut msg: SipMessage, _src: Src) {
        self.pop_own_routes(&mut msg);
        // none when it is for us: the ACK of a response sent without a transaction (a 503 while
        // shedding, a refusal to a stranger), or a stray; it ends here
        let Some(dest) = self.next_hop(&msg) else {
            return;
        };
        let mf = msg.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
        if mf == 0 {
            return;
        }
        msg.set("Max-Forwards", (mf - 1).to_string());
        let b = self.io.branch();
        msg.push_front("Via", format!("SIP/2.0/{} {};branch={b}", dest.proto.via_name(), self.hostport(dest.proto)));
        self.send(dest, msg);
    }

    /// This run of the node, as [`HT_PARAM`] names it.
    fn boot(&self) -> String {
        format!("{:x}", self.cfg.seed & 0xffff_ffff)
    }

    /// `<boot>.<trunk>` for this run of the node.
    pub(super) fn boot_tag(&self, trunk: &str) -> String {
        format!("{}.{trunk}", self.boot())
    }

    /// A BYE whose own Route entry (`ht`, from [`Engine::pop_own_routes`]) names an earlier run of
    /// this node, for a call that run admitted: the kept slot it may free, (trunk, Call-ID).
    ///
    /// Freed only when the far end answers the BYE 2xx, not as it passes: a BYE the earlier run
    /// already relayed (its 200 was lost, the caller retransmits across the restart) names the
    /// same boot, but its call ended before the restart and its slot was no longer kept; the far
    /// end answers that one 481. Freeing on passage let such a retransmission free the slot of a
    /// call still up (simulation seed 701932: 14 calls against a limit of 13).
    fn earlier_run_bye(&self, ht: &str, msg: &SipMessage) -> Option<(String, String)> {
        let (boot, trunk) = ht.split_once('.')?;
        if boot == self.boot() {
            return None; // this run's call: its slot went with the call record
        }
        Some((trunk.to_string(), msg.header("Call-ID").unwrap_or_default().to_string()))
    }

    /// A request inside a dialog, with its server transaction `key` already created.
    pub(super) fn relay_in_dialog(&mut self, key: TxKey, mut msg: SipMessage) {
        let ht = self.pop_own_routes(&mut msg);
        let kept = ht.filter(|_| msg.method() == Some(&Method::Bye)).and_then(|ht| self.earlier_run_bye(&ht, &msg));
        let ruri_is_us = msg.uri().and_then(|u| SipUri::parse(u).ok()).is_some_and(|u| self.is_us(&u));
        if msg.header("Route").is_none() && ruri_is_us {
            return self.respond_key(&key, 481, None);
        }
        let Some(dest) = self.next_hop(&msg) else {
            return self.respond_key(&key, 404, None);
        };
        if msg.method() == Some(&Method::Bye) {
            if let Some(id) = msg.header("Call-ID").and_then(|c| self.calls.by_dialog(c)) {
                self.finish(id, Disposition::Answered, Cause::NormalClearing, None, true);
            }
        }
        let mf = msg.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
        msg.set("Max-Forwards", mf.saturating_sub(1).to_string());
        self.start_client(msg, dest, Owner::Relay(key, kept));
    }

    /// A response to a relayed request goes back through its server transaction.
    pub(super) fn relay_response(&mut self, key: &TxKey, kept: Option<(String, String)>, resp: SipMessage) {
        if let (Some((trunk, call_id)), Some(200..=299)) = (kept, resp.code()) {
            self.io.push(Action::ReleaseInherited { trunk, call_id });
        }
        self.respond_msg(key, resp);
    }

    /// The call outlived `max_call_duration_s` with no BYE: give its slot back.
    pub(super) fn dialog_expired(&mut self, id: u64) {
        if let Some(call_id) = self.calls.get(id).filter(|c| c.answer_ms.is_some()).map(|c| c.call_id.clone()) {
            tracing::warn!(%call_id, "call reached its maximum duration without a BYE; slot reclaimed");
            self.finish(id, Disposition::Answered, Cause::MaxDurationExceeded, None, true);
        }
    }

    /// Remove the top Route entries that name this node (RFC 3261 section 16.4). Returns the
    /// [`HT_PARAM`] our entry carried, if any.
    pub(super) fn pop_own_routes(&self, msg: &mut SipMessage) -> Option<String> {
        let mut ht = None;
        while let Some(top) = msg.header("Route").map(|r| addr_uri(r).to_string()) {
            match SipUri::parse(&top) {
                Ok(u) if self.is_us(&u) => {
                    ht = ht.or_else(|| u.param(HT_PARAM).map(str::to_string));
                    msg.pop("Route");
                }
                _ => break,
            }
        }
        ht
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
    /// (call after [`Engine::pop_own_routes`]): a request sent to ourselves would come back with
    /// one more Via, hop after hop, until Max-Forwards ran out.
    fn next_hop(&self, msg: &SipMessage) -> Option<Src> {
        let uri = match msg.header("Route") {
            Some(r) => addr_uri(r).to_string(),
            None => msg.uri()?.to_string(),
        };
        if SipUri::parse(&uri).is_ok_and(|u| self.is_us(&u)) {
            return None;
        }
        uri_dest(&uri)
    }
}

/// Where a SIP URI with a literal IP host is reached (DNS is not used on the call path).
pub(super) fn uri_dest(uri: &str) -> Option<Src> {
    let u = SipUri::parse(uri).ok()?;
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

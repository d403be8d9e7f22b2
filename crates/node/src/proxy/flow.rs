//! Registered PBXes behind NAT: calls reach them over the flow their REGISTER came on (RFC 5626's
//! flows, with RFC 3327's Path in effect), whichever node the call entered.
//!
//! A NAT lets in only what answers the PBX's own traffic: UDP from the node and port the PBX sent
//! to, and nothing on a TCP connection the PBX did not open. So the node that took the REGISTER
//! (the flow's node) delivers: it sends from the socket the PBX's mapping points at, or on the
//! PBX's own connection. A call entering on another node goes there as a loose-routed hop,
//! `Route: <sip:FLOW@node;lr>` (the flow's node is named in the replicated binding), signed like a
//! forwarded call. The flow's node record-routes with the same token, so the dialog's later
//! requests find the flow too; a request arriving *on* its flow (the PBX's own) is routed on
//! normally. Keep-alives (CRLF) hold the pinhole open, and bindings behind NAT get a short Expires,
//! so a PBX whose flow's node is gone registers again through another one soon.

use hatrunk_sip::headers::{addr_uri, SipUri};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::transport::Proto;
use hatrunk_sip::SipMessage;

use super::calls::Dest;
use super::context::{cx, Cx};
use super::{Engine, Owner, Src};

/// Signs a call routed to a member's flow (`forward_sig`): only members may use a flow.
pub(super) const FLOW_HEADER: &str = "X-Hatrunk-Flow";

/// What a flow token starts with (a URI user part: `flow-<proto><conn>-<hex address>`).
const PREFIX: &str = "flow-";

/// How an attempt reaches a registered PBX's flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hop {
    /// This node holds it: record-route with the token.
    Local(String),
    /// Member `node` (its SIP `host:port`) holds it: route through that member.
    Member { token: String, at: String },
}

/// The token naming `src` (the PBX's address as this node sees it, and its connection).
pub(crate) fn token(src: Src) -> String {
    let p = match src.proto {
        Proto::Udp => 'u',
        Proto::Tcp => 't',
        Proto::Tls => 's',
    };
    format!("{PREFIX}{p}{}-{}", src.conn.unwrap_or(0), hex::encode(src.addr.to_string()))
}

/// The flow a token names; `None` if it is not one.
pub(crate) fn parse(user: &str) -> Option<Src> {
    let rest = user.strip_prefix(PREFIX)?;
    let (head, addr) = rest.split_once('-')?;
    let mut chars = head.chars();
    let proto = match chars.next()? {
        'u' => Proto::Udp,
        't' => Proto::Tcp,
        's' => Proto::Tls,
        _ => return None,
    };
    let conn: u64 = chars.as_str().parse().ok()?;
    let addr = String::from_utf8(hex::decode(addr).ok()?).ok()?.parse().ok()?;
    Some(Src { proto, addr, conn: (conn != 0).then_some(conn) })
}

/// Whether `msg` arrived on the flow `flow` (then it is the PBX's own request, routed on).
pub(crate) fn arrived_on(flow: Src, src: Src) -> bool {
    flow.proto == src.proto && flow.addr == src.addr
}

/// Where a call to the Digest account `user` goes: its flow on this node, or through the member
/// holding it, or (bindings written before flows) straight to the address it registered from.
/// None when it is not registered, or its flow's member is down (logged: it registers again soon).
pub(super) fn dest(cx: &mut Cx<'_>, user: &str, trunk: &str) -> Option<Dest> {
    if let Some(b) = cx.registrar.lookup(user, cx.now) {
        return Some(Dest { src: b.src, ruri: b.contact.clone(), shown: None, flow: Some(Hop::Local(token(b.src))) });
    }
    let (contact, route, _) = cx.store.registration(user).filter(|(_, _, expires_ms)| *expires_ms > cx.now)?;
    let (src, via) = super::registrar::parse_route(&route)?;
    let Some(node) = via.filter(|n| *n != cx.cfg.node_id) else {
        // ours from an earlier run (the UDP socket is the same; a connection is gone), or older
        return Some(Dest { src, ruri: contact, shown: None, flow: via.map(|_| Hop::Local(token(src))) });
    };
    let view = cx.cluster.view(cx.now);
    let Some(m) = view.get(node).filter(|m| m.member.sip && m.alive) else {
        tracing::warn!(user, trunk, node, "the PBX's flow is held by a member that is down: unreachable until it registers again");
        return None;
    };
    let at: std::net::SocketAddr = m.member.sip_addr.parse().ok()?;
    Some(Dest {
        src: Src { proto: Proto::Udp, addr: at, conn: None },
        ruri: contact.clone(),
        shown: Some(format!("{contact} via {}", m.member.name)),
        flow: Some(Hop::Member { token: token(src), at: m.member.sip_addr.clone() }),
    })
}

/// Put `hop` into an attempt's INVITE: the token in our PBX-side Record-Route, or the route
/// through the member holding the flow, signed.
pub(super) fn mark(cx: &mut Cx<'_>, m: &mut SipMessage, hop: &Hop) {
    match hop {
        Hop::Local(token) => {
            if let Some(top) = m.pop("Record-Route") {
                m.push_front("Record-Route", with_user(&top, token));
            }
        }
        Hop::Member { token, at } => {
            m.push_front("Route", format!("<sip:{token}@{at};lr>"));
            let secret = cx.store.cluster_secret();
            let value = super::forward_sig::ingress_value(secret.as_deref(), m.header("Call-ID").unwrap_or(""), &cx.cfg.node, None);
            m.set(FLOW_HEADER, value);
        }
    }
}

/// `<sip:HOST...>` as `<sip:USER@HOST...>`.
fn with_user(entry: &str, user: &str) -> String {
    entry.replacen("<sip:", &format!("<sip:{user}@"), 1)
}

/// The flow the top Route names, if it is ours and names one.
fn top_flow(cx: &Cx<'_>, msg: &SipMessage) -> Option<Src> {
    let u = SipUri::parse(addr_uri(msg.header("Route")?)).ok()?;
    if !cx.is_us(&u) {
        return None;
    }
    parse(u.user.as_deref()?)
}

impl Engine {
    /// A new INVITE routed to one of our flows by another member: relay it to the PBX on that
    /// flow, record-routed with the token. True when it was one (answered either way).
    pub(super) fn relay_to_flow(&mut self, key: &TxKey, msg: &mut SipMessage, src: Src) -> bool {
        let Some(flow) = top_flow(&cx!(self), msg) else {
            return false;
        };
        let signed = msg.header(FLOW_HEADER).map(str::to_string).unwrap_or_default();
        msg.remove_all(FLOW_HEADER);
        let secret = self.store.cluster_secret();
        let member = cx!(self).member_at(src);
        if member.is_none() || !super::forward_sig::verify(secret.as_deref(), msg.header("Call-ID").unwrap_or(""), &signed) {
            tracing::warn!(source = %src.addr, "a call to a PBX's flow from outside the cluster refused");
            self.metrics.guard_drops.with_label_values(&["forged"]).inc();
            self.respond_key(key, 403, None);
            return true;
        }
        let Some(dest) = self.registrar.flow_for(flow, self.now) else {
            tracing::warn!(flow = %flow.addr, from = ?member, "a call for a flow this node no longer holds (the PBX has not registered again yet)");
            self.respond_key(key, 480, Some("SIP;cause=480;text=\"Flow gone; the PBX must register again\""));
            return true;
        };
        self.respond_key(key, 100, None);
        let mut c = cx!(self);
        c.pop_own_routes(msg);
        let mf = msg.header("Max-Forwards").and_then(|v| v.parse::<u8>().ok()).unwrap_or(70);
        msg.set("Max-Forwards", mf.saturating_sub(1).to_string());
        c.record_route(msg, src.proto, dest.proto, "");
        mark(&mut c, msg, &Hop::Local(token(dest)));
        c.start_client(std::mem::replace(msg, SipMessage::response(0, "")), dest, Owner::Relay(key.clone(), None));
        true
    }
}

/// Where an in-dialog request goes when the Route entry we popped named a flow: on that flow,
/// unless the request came on it (the PBX's own, routed on).
pub(super) fn in_dialog_dest(cx: &Cx<'_>, flow: Option<Src>, src: Src) -> Option<Src> {
    let flow = flow.filter(|f| !arrived_on(*f, src))?;
    Some(cx.registrar.flow_for(flow, cx.now).unwrap_or(flow))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_flow_and_nothing_else_parses_as_one() {
        for (proto, addr, conn) in [(Proto::Udp, "203.0.113.9:40000", None), (Proto::Tcp, "[2001:db8::5]:5060", Some(17))] {
            let src = Src { proto, addr: addr.parse().expect("addr"), conn };
            let t = token(src);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "a plain URI user part: {t}");
            assert_eq!(parse(&t), Some(src));
        }
        for bad in ["flow-", "flow-x0-00", "flow-u0-zz", "6561230000", "flow-u0-", "flow-uq-3132"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

//! The registrar for Digest accounts (RFC 3261 section 10.3): REGISTER is challenged, verified
//! against the account's stored HA1, and its binding kept until it expires. Calls to a Digest account
//! go to its Contact, or to the address the REGISTER came from when the Contact's IP differs (NAT).

use std::collections::HashMap;

use hatrunk_sip::headers::{addr_uri, param};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use hatrunk_sip::transport::Proto;

use super::{build, uri_dest, Action, Engine, Src};

/// A delivery address as replicated: `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`.
pub fn route_of(src: Src) -> String {
    let p = match src.proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
        Proto::Tls => "tls",
    };
    format!("{p}:{}", src.addr)
}

/// Parse [`route_of`]'s format back, with the node holding the flow (`;via=ID`, since flows;
/// bindings replicated before carry none).
pub fn parse_route(route: &str) -> Option<(Src, Option<u64>)> {
    let (route, via) = match route.split_once(";via=") {
        Some((r, v)) => (r, Some(v.parse().ok()?)),
        None => (route, None),
    };
    let (p, addr) = route.split_once(':')?;
    let proto = match p {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => return None,
    };
    Some((Src { proto, addr: addr.parse().ok()?, conn: None }, via))
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub contact: String,
    pub src: Src,
    pub expires_ms: u64,
    /// Reached over its flow rather than at its Contact (behind NAT, or on its own connection):
    /// kept alive, and bound for a short time.
    pub nat: bool,
    /// When its next keep-alive is due.
    pub keepalive_ms: u64,
}

#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Binding>,
}

impl Registrar {
    pub fn lookup(&self, user: &str, now: u64) -> Option<&Binding> {
        self.bindings.get(user).filter(|b| b.expires_ms > now)
    }

    /// The live binding on `flow` (same transport and address), as it is now: a PBX that
    /// reconnected has a new connection. Only registered PBXes are reached through a flow.
    pub fn flow_for(&self, flow: Src, now: u64) -> Option<Src> {
        self.bindings.values().find(|b| b.expires_ms > now && b.src.proto == flow.proto && b.src.addr == flow.addr).map(|b| b.src)
    }

    /// The flows of bindings behind NAT whose keep-alive is due at `now` (each then due `every_ms` later).
    pub fn keepalives_due(&mut self, now: u64, every_ms: u64) -> Vec<Src> {
        if every_ms == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for b in self.bindings.values_mut().filter(|b| b.nat && b.keepalive_ms <= now && b.expires_ms > now) {
            b.keepalive_ms = now + every_ms;
            out.push(b.src);
        }
        out
    }

    /// Drop the bindings that expired by `now`; returns their users.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.bindings.retain(|u, b| {
            let live = b.expires_ms > now;
            if !live {
                gone.push(u.clone());
            }
            live
        });
        gone
    }
}

/// Why a REGISTER's Contacts were refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Malformed (`*` with others or a non-zero expiry, a bad `expires`, an unusable Contact): 400.
    Bad,
    /// Shorter than we keep bindings for: 423 with this `Min-Expires`.
    TooBrief(u32),
}

impl Registrar {
    /// Apply an authenticated REGISTER of `user` from `src` at `now`: add, refresh or remove its
    /// binding. Returns the binding to echo in the 200 (contact, seconds left), if any.
    pub(super) fn register(
        &mut self,
        user: &str,
        msg: &SipMessage,
        src: Src,
        now: u64,
        (min_s, max_s, nat_max_s): (u32, u32, u32),
    ) -> Result<Option<(String, u32)>, Refusal> {
        let default_expires = msg.header("Expires").and_then(|e| e.trim().parse::<u32>().ok()).unwrap_or(3600);
        let contacts: Vec<String> = msg.headers_named("Contact").map(str::to_string).collect();
        if contacts.iter().any(|c| c == "*") {
            if default_expires != 0 || contacts.len() > 1 {
                return Err(Refusal::Bad);
            }
            self.bindings.remove(user);
        }
        let mut granted = None;
        for c in contacts.iter().filter(|c| *c != "*") {
            let expires = match param(c, "expires") {
                Some(e) => e.parse::<u32>().map_err(|_| Refusal::Bad)?,
                None => default_expires,
            };
            if expires == 0 {
                self.bindings.remove(user);
                continue;
            }
            if expires < min_s {
                return Err(Refusal::TooBrief(min_s));
            }
            let uri = addr_uri(c).to_string();
            // Deliver to the Contact when its IP is the one the REGISTER came from; otherwise the PBX
            // is behind NAT (nathelper's "Contact IP != source IP" test) and we use the source.
            let (dest, nat) = match uri_dest(&uri) {
                Some(d) if d.addr.ip() == src.addr.ip() => (d, false),
                // on a stream, its own connection: a NAT lets no other in
                Some(_) if src.proto != Proto::Udp => (src, true),
                Some(_) => (Src { conn: None, ..src }, true),
                None => return Err(Refusal::Bad),
            };
            let expires = expires.min(if nat { nat_max_s.max(min_s) } else { max_s });
            let keepalive_ms = self.bindings.get(user).map_or(now, |b| b.keepalive_ms);
            let expires_ms = now + u64::from(expires) * 1000;
            self.bindings.insert(user.to_string(), Binding { contact: uri.clone(), src: dest, expires_ms, nat, keepalive_ms });
            granted = Some((uri, expires));
        }
        Ok(granted.or_else(|| self.lookup(user, now).map(|b| (b.contact.clone(), ((b.expires_ms - now) / 1000) as u32))))
    }
}

impl Engine {
    /// REGISTER: authenticated here (the engine holds the nonces and the guard), applied by the
    /// registrar, answered and replicated.
    pub(super) fn on_register(&mut self, key: TxKey, msg: SipMessage, src: Src) {
        let to = addr_uri(msg.header("To").unwrap_or("")).to_ascii_lowercase();
        if !(to.starts_with("sip:") || to.starts_with("sips:")) {
            return self.respond_key(&key, 416, None); // RFC 4475 section 3.3.8
        }
        let (trunk, role) = match self.authenticate(&msg, "Authorization", src.addr.ip()) {
            Ok(found) => found,
            Err(challenge) => {
                let Some(challenge) = challenge else {
                    return self.respond_key(&key, 403, None);
                };
                return self.send_challenge(&key, &msg, 401, challenge);
            }
        };
        let Some(user) = trunk.account(role).and_then(|a| a.username.clone()) else {
            return self.respond_key(&key, 403, None);
        };
        let limits = (self.cfg.min_expires_s, self.cfg.max_expires_s, self.cfg.nat_max_expires_s);
        let echo = match self.registrar.register(&user, &msg, src, self.now, limits) {
            Ok(echo) => echo,
            Err(Refusal::Bad) => return self.respond_key(&key, 400, None),
            Err(Refusal::TooBrief(min)) => {
                let mut r = build::response(&msg, 423, Some(&self.io.tag()));
                r.push("Min-Expires", min.to_string());
                return self.respond_msg(&key, r);
            }
        };
        let mut r = build::response(&msg, 200, Some(&self.io.tag()));
        if let Some((uri, expires)) = echo {
            r.push("Contact", format!("<{uri}>;expires={expires}"));
        }
        tracing::info!(user = %user, trunk = %trunk.id, "registered");
        self.respond_msg(&key, r);
        self.status.set_registration(&trunk.id, role, self.registrar.lookup(&user, self.now).map(|b| b.contact.clone()));
        let replicated = match self.registrar.lookup(&user, self.now) {
            Some(b) => Action::Register {
                user,
                contact: b.contact.clone(),
                route: format!("{};via={}", route_of(b.src), self.cfg.node_id),
                expires_ms: b.expires_ms,
            },
            None => Action::Register { user, contact: String::new(), route: String::new(), expires_ms: 0 },
        };
        self.io.push(replicated);
    }
}

#[cfg(test)]
mod tests {
    use hatrunk_sip::parse::parse;

    use super::*;

    fn register(contact: &str, expires: &str) -> SipMessage {
        let text = format!(
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5090;branch=z9hG4bKr\r\nFrom: <sip:pbx@h>;tag=1\r\n\
             To: <sip:pbx@h>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes(), true).expect("parses")
    }

    fn from(addr: &str) -> Src {
        Src { proto: Proto::Udp, addr: addr.parse().expect("addr"), conn: None }
    }

    #[test]
    fn bindings_are_bounded_follow_nat_and_can_be_removed() {
        let mut r = Registrar::default();
        let limits = (60, 3600, 120);
        // too brief: 423 with our minimum; too long: capped
        assert_eq!(
            r.register("pbx", &register("<sip:pbx@10.0.0.7:5090>", "30"), from("10.0.0.7:5090"), 0, limits),
            Err(Refusal::TooBrief(60))
        );
        let echo = r.register("pbx", &register("<sip:pbx@10.0.0.7:5090>", "7200"), from("10.0.0.7:5090"), 0, limits);
        assert_eq!(echo, Ok(Some(("sip:pbx@10.0.0.7:5090".into(), 3600))));
        assert_eq!(r.lookup("pbx", 3_599_999).map(|b| b.src.addr.to_string()), Some("10.0.0.7:5090".into()));
        assert!(r.lookup("pbx", 3_600_000).is_none(), "gone at its expiry");
        // a Contact naming another address than the source: behind NAT, calls go to the source
        r.register("pbx", &register("<sip:pbx@192.168.1.5:5060>", "600"), from("203.0.113.9:40000"), 0, limits).expect("ok");
        assert_eq!(
            r.lookup("pbx", 1).map(|b| (b.contact.as_str(), b.src.addr.to_string())),
            Some(("sip:pbx@192.168.1.5:5060", "203.0.113.9:40000".into()))
        );
        // `*` with Expires 0 removes; `*` otherwise and a bad expires are malformed
        assert_eq!(r.register("pbx", &register("*", "0"), from("203.0.113.9:40000"), 2, limits), Ok(None));
        assert!(r.lookup("pbx", 2).is_none());
        assert_eq!(r.register("pbx", &register("*", "60"), from("10.0.0.7:5090"), 3, limits), Err(Refusal::Bad));
        assert_eq!(
            r.register("pbx", &register("<sip:pbx@10.0.0.7>;expires=soon", "60"), from("10.0.0.7:5090"), 3, limits),
            Err(Refusal::Bad)
        );
        assert_eq!(r.expire(3), Vec::<String>::new());
    }
}

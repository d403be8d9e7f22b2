//! The registrar for Digest accounts (RFC 3261 section 10.3): REGISTER is challenged, verified
//! against the account's stored HA1, and its binding kept until it expires. Calls to a Digest account
//! go to its Contact, or to the address the REGISTER came from when the Contact's IP differs (NAT).

use std::collections::HashMap;

use hatrunk_sip::headers::{addr_uri, param};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use hatrunk_sip::transport::Proto;

use super::{build, dialog::uri_dest, Action, Engine, Src};

/// A delivery address as replicated: `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`.
pub fn route_of(src: Src) -> String {
    let p = match src.proto {
        Proto::Udp => "udp",
        Proto::Tcp => "tcp",
        Proto::Tls => "tls",
    };
    format!("{p}:{}", src.addr)
}

/// Parse [`route_of`]'s format back.
pub fn parse_route(route: &str) -> Option<Src> {
    let (p, addr) = route.split_once(':')?;
    let proto = match p {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => return None,
    };
    Some(Src { proto, addr: addr.parse().ok()?, conn: None })
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub contact: String,
    pub src: Src,
    pub expires_ms: u64,
}

#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Binding>,
}

impl Registrar {
    pub fn lookup(&self, user: &str, now: u64) -> Option<&Binding> {
        self.bindings.get(user).filter(|b| b.expires_ms > now)
    }

    /// Drop the bindings that expired by `now`; returns their users.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let gone: Vec<String> = self.bindings.iter().filter(|(_, b)| b.expires_ms <= now).map(|(u, _)| u.clone()).collect();
        for u in &gone {
            self.bindings.remove(u);
        }
        gone
    }
}

impl Engine {
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
        let default_expires = msg.header("Expires").and_then(|e| e.trim().parse::<u32>().ok()).unwrap_or(3600);
        let contacts: Vec<String> = msg.headers_named("Contact").map(str::to_string).collect();
        if contacts.iter().any(|c| c == "*") {
            if default_expires != 0 || contacts.len() > 1 {
                return self.respond_key(&key, 400, None);
            }
            self.registrar.bindings.remove(&user);
        }
        let mut granted = None;
        for c in contacts.iter().filter(|c| *c != "*") {
            let expires = match param(c, "expires") {
                Some(e) => match e.parse::<u32>() {
                    Ok(v) => v,
                    Err(_) => return self.respond_key(&key, 400, None),
                },
                None => default_expires,
            };
            if expires == 0 {
                self.registrar.bindings.remove(&user);
                continue;
            }
            if expires < self.cfg.min_expires_s {
                let mut r = build::response(&msg, 423, Some(&self.io.tag()));
                r.push("Min-Expires", self.cfg.min_expires_s.to_string());
                return self.respond_msg(&key, r);
            }
            let expires = expires.min(self.cfg.max_expires_s);
            let uri = addr_uri(c).to_string();
            // Deliver to the Contact when its IP is the one the REGISTER came from; otherwise the PBX
            // is behind NAT (nathelper's "Contact IP != source IP" test) and we use the source.
            let dest = match uri_dest(&uri) {
                Some(d) if d.addr.ip() == src.addr.ip() => d,
                Some(_) => Src { conn: None, ..src },
                None => return self.respond_key(&key, 400, None),
            };
            self.registrar
                .bindings
                .insert(user.clone(), Binding { contact: uri.clone(), src: dest, expires_ms: self.now + u64::from(expires) * 1000 });
            granted = Some((uri, expires));
        }
        let mut r = build::response(&msg, 200, Some(&self.io.tag()));
        if let Some((uri, expires)) = granted
            .or_else(|| self.registrar.lookup(&user, self.now).map(|b| (b.contact.clone(), ((b.expires_ms - self.now) / 1000) as u32)))
        {
            r.push("Contact", format!("<{uri}>;expires={expires}"));
        }
        tracing::info!(user = %user, trunk = %trunk.id, "registered");
        self.respond_msg(&key, r);
        self.status.set_registration(&trunk.id, role, self.registrar.lookup(&user, self.now).map(|b| b.contact.clone()));
        let replicated = match self.registrar.lookup(&user, self.now) {
            Some(b) => Action::Register { user, contact: b.contact.clone(), route: route_of(b.src), expires_ms: b.expires_ms },
            None => Action::Register { user, contact: String::new(), route: String::new(), expires_ms: 0 },
        };
        self.io.push(replicated);
    }
}

//! Who a PBX's request is from: an IP account allowing its source (by address, or by a host name
//! in `allowed_ips` as last resolved), else Digest authentication (REGISTER with Authorization,
//! outbound INVITE with Proxy-Authorization) against the stored HA1 of the account named by the
//! username.

use std::net::IpAddr;
use std::sync::Arc;

use hatrunk_core::trunk::{AuthMode, Role, Trunk};
use hatrunk_sip::digest::{Credentials, NonceCheck};
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use super::{build, Engine};

impl Engine {
    /// The IP accounts allowing `ip`: by address first, else by a host name resolving to it.
    pub(super) fn accounts_at(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)> {
        let by_address = self.store.by_source(ip);
        if !by_address.is_empty() {
            return by_address;
        }
        self.dns.allowed_at(ip).into_iter().filter_map(|(id, role)| Some((self.store.get(&id)?, role))).collect()
    }

    /// Check digest credentials in `header`. `Ok` names the account; `Err(Some(challenge))` means
    /// challenge (again); `Err(None)` means there are no Digest accounts at all, so nothing to ask.
    /// Wrong credentials count against the source and the account (`guard.rs`); a locked account
    /// is challenged without its credentials being checked, so guessing learns nothing; a nonce
    /// authenticates one request only.
    pub(super) fn authenticate(&mut self, msg: &SipMessage, header: &str, ip: IpAddr) -> Result<(Arc<Trunk>, Role), Option<String>> {
        let challenge = |e: &mut Engine, alg, stale| e.nonces.challenge(hatrunk_core::credentials::REALM, alg, e.now, stale);
        let Some(creds) = msg.header(header).and_then(Credentials::parse) else {
            // only worth a challenge when some Digest account exists (the trunk scan is paid only here)
            let any_digest = self
                .store
                .list()
                .iter()
                .any(|t| [Role::Primary, Role::Secondary].iter().any(|r| t.account(*r).is_some_and(|a| a.auth == AuthMode::Digest)));
            return Err(any_digest.then(|| challenge(self, hatrunk_sip::digest::Algorithm::Md5, false)));
        };
        let alg = creds.algorithm().unwrap_or(hatrunk_sip::digest::Algorithm::Md5);
        match self.nonces.check(&creds.nonce, self.now) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => return Err(Some(challenge(self, alg, true))),
            NonceCheck::Invalid => return Err(Some(challenge(self, alg, false))),
        }
        if self.guard.account_locked(ip, &creds.username, self.now) {
            self.auth_failed(ip, &creds.username);
            return Err(Some(challenge(self, alg, false)));
        }
        let found = self.store.by_username(&creds.username);
        let ok = found.as_ref().and_then(|(t, r)| t.account(*r)).and_then(|a| a.ha1.as_ref()).is_some_and(|ha1| {
            let h = match alg {
                hatrunk_sip::digest::Algorithm::Md5 => &ha1.md5,
                hatrunk_sip::digest::Algorithm::Sha256 => &ha1.sha256,
            };
            creds.verify(msg.method().map(|m| m.as_str()).unwrap_or(""), h)
        });
        match (ok, found) {
            (true, Some(f)) => {
                if !self.nonces.consume(&creds.nonce, self.now) {
                    // a replay of a request already let in (or no room to remember the nonce)
                    return Err(Some(challenge(self, alg, true)));
                }
                self.guard.auth_ok(ip, &creds.username, self.now);
                Ok(f)
            }
            _ => {
                tracing::info!(user = %creds.username, source = %ip, "digest authentication failed");
                self.auth_failed(ip, &creds.username);
                Err(Some(challenge(self, alg, false)))
            }
        }
    }

    /// Answer 401 (registrar, WWW-Authenticate) or 407 (proxy, Proxy-Authenticate) with `challenge`.
    pub(super) fn send_challenge(&mut self, key: &TxKey, msg: &SipMessage, code: u16, challenge: String) {
        let header = if code == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let mut r = build::response(msg, code, Some(&self.io.tag()));
        r.push(header, challenge);
        self.metrics.auth_failures.inc();
        self.respond_msg(key, r);
    }
}

//! Digest access authentication (RFC 7616, with RFC 2617's MD5 still accepted): challenge, parse,
//! verify against a stored HA1, and stateless nonces that expire.
//!
//! Nonces are `<issued-ms hex>.<sequence hex>.<sha256(secret, issued-ms, sequence) prefix>`: the node
//! checks one without storing what it issued, and an old one is answered with `stale=true` so the PBX
//! retries with the new nonce instead of prompting for a password. Each nonce authenticates one
//! request: the issuer remembers the nonces used within their lifetime (bounded), so a captured
//! request replayed is challenged again. `nc` is hexadecimal (RFC 7616 section
//! 3.4), which rsip gets wrong.

use std::collections::HashMap;

use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest algorithm of a challenge or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn hash(self, s: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(s.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(s.as_bytes())),
        }
    }
}

/// The fields of an `Authorization: Digest ...` header we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

impl Credentials {
    /// Parse `Digest k=v, k="v", ...`. `None` when it is not a Digest header or misses a field.
    pub fn parse(header: &str) -> Option<Credentials> {
        let rest = header.trim();
        let (scheme, rest) = rest.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut c = Credentials::default();
        for part in crate::headers::split_list(rest) {
            let (k, v) = part.split_once('=')?;
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v).to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "username" => c.username = v,
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "uri" => c.uri = v,
                "response" => c.response = v.to_ascii_lowercase(),
                "algorithm" => c.algorithm = Some(v),
                "qop" => c.qop = Some(v),
                "nc" => c.nc = Some(v),
                "cnonce" => c.cnonce = Some(v),
                _ => {}
            }
        }
        (!c.username.is_empty() && !c.nonce.is_empty() && !c.response.is_empty()).then_some(c)
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        match self.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The nonce count as a number (it is hex on the wire).
    pub fn nonce_count(&self) -> Option<u32> {
        self.nc.as_deref().and_then(|n| u32::from_str_radix(n, 16).ok())
    }

    /// Whether `response` is right for `method` given the account's HA1 for this algorithm.
    pub fn verify(&self, method: &str, ha1: &str) -> bool {
        let Some(alg) = self.algorithm() else {
            return false;
        };
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        let expected = match self.qop.as_deref() {
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (&self.nc, &self.cnonce) else {
                    return false;
                };
                if self.nonce_count().is_none() {
                    return false;
                }
                alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
            }
            None => alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
            Some(_) => return false,
        };
        constant_time_eq(expected.as_bytes(), self.response.as_bytes())
    }
}

/// Equal in time that does not depend on where the first difference is (secrets, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Issues and checks nonces with a node secret.
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    secret: String,
    pub lifetime_ms: u64,
    seq: u64,
    /// Nonces already used, with when they were issued (forgotten once expired anyway).
    used: HashMap<String, u64>,
}

/// Used nonces remembered at most. Past it (after dropping expired ones) a nonce cannot be
/// recorded, so it is refused as stale: the PBX retries with a fresh one, no replay gets in.
pub const MAX_USED_NONCES: usize = 200_000;

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Fresh,
    /// Ours, but expired or already used: challenge again with `stale=true`.
    Stale,
    /// Not one we issued.
    Invalid,
}

impl NonceIssuer {
    pub fn new(secret: impl Into<String>, lifetime_ms: u64) -> Self {
        NonceIssuer { secret: secret.into(), lifetime_ms, seq: 0, used: HashMap::new() }
    }

    pub fn issue(&mut self, now_ms: u64) -> String {
        self.seq = self.seq.wrapping_add(1);
        format!("{now_ms:x}.{:x}.{}", self.seq, self.mac(now_ms, self.seq))
    }

    /// Whether `nonce` is one of ours and still within its lifetime (used or not).
    pub fn check(&self, nonce: &str, now_ms: u64) -> NonceCheck {
        let mut parts = nonce.splitn(3, '.');
        let (Some(ts), Some(seq), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return NonceCheck::Invalid;
        };
        let (Ok(ts), Ok(seq)) = (u64::from_str_radix(ts, 16), u64::from_str_radix(seq, 16)) else {
            return NonceCheck::Invalid;
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(ts, seq).as_bytes()) {
            return NonceCheck::Invalid;
        }
        if now_ms.saturating_sub(ts) > self.lifetime_ms || ts > now_ms + 60_000 {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    /// Spend a nonce that [`NonceIssuer::check`] found fresh and whose credentials verified: true
    /// the first time, false for a replay (or when no more used nonces can be remembered).
    pub fn consume(&mut self, nonce: &str, now_ms: u64) -> bool {
        if self.used.contains_key(nonce) {
            return false;
        }
        if self.used.len() >= MAX_USED_NONCES {
            let life = self.lifetime_ms;
            self.used.retain(|_, ts| now_ms.saturating_sub(*ts) <= life);
            if self.used.len() >= MAX_USED_NONCES {
                return false;
            }
        }
        let ts = nonce.split('.').next().and_then(|t| u64::from_str_radix(t, 16).ok()).unwrap_or(now_ms);
        self.used.insert(nonce.to_string(), ts);
        true
    }

    /// Forget used nonces that have expired anyway (called from the node's upkeep).
    pub fn expire(&mut self, now_ms: u64) {
        let life = self.lifetime_ms;
        self.used.retain(|_, ts| now_ms.saturating_sub(*ts) <= life);
    }

    fn mac(&self, ts: u64, seq: u64) -> String {
        let h = Sha256::digest(format!("{}:{ts:x}:{seq:x}:{}", self.secret, self.secret).as_bytes());
        hex::encode(&h[..12])
    }

    /// A `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn challenge(&mut self, realm: &str, alg: Algorithm, now_ms: u64, stale: bool) -> String {
        let stale = if stale { ", stale=true" } else { "" };
        format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{stale}", self.issue(now_ms), alg.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_without_qop_shape() {
        // Compute a response the way a UA does and check we accept it, and reject a wrong one.
        let ha1 = Algorithm::Md5.hash("alice:hatrunk:secret");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:127.0.0.1");
        let resp = Algorithm::Md5.hash(&format!("{ha1}:n1:0000000a:c1:auth:{ha2}"));
        let hdr = format!("Digest username=\"alice\", realm=\"hatrunk\", nonce=\"n1\", uri=\"sip:127.0.0.1\", response=\"{resp}\", qop=auth, nc=0000000a, cnonce=\"c1\", algorithm=MD5");
        let c = Credentials::parse(&hdr).expect("parse");
        assert_eq!(c.nonce_count(), Some(10), "nc is hex");
        assert!(c.verify("REGISTER", &ha1));
        assert!(!c.verify("INVITE", &ha1));
        assert!(!c.verify("REGISTER", &Algorithm::Md5.hash("alice:hatrunk:wrong")));
    }

    #[test]
    fn sha256() {
        let ha1 = Algorithm::Sha256.hash("bob:hatrunk:pw");
        let ha2 = Algorithm::Sha256.hash("INVITE:sip:x");
        let resp = Algorithm::Sha256.hash(&format!("{ha1}:n:{ha2}"));
        let hdr = format!("Digest username=\"bob\",realm=\"hatrunk\",nonce=\"n\",uri=\"sip:x\",response=\"{resp}\",algorithm=SHA-256");
        assert!(Credentials::parse(&hdr).expect("parse").verify("INVITE", &ha1));
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let mut n = NonceIssuer::new("s", 1000);
        let nonce = n.issue(5000);
        assert_ne!(nonce, n.issue(5000), "two nonces of the same millisecond differ");
        assert_eq!(n.check(&nonce, 5500), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 7000), NonceCheck::Stale);
        assert_eq!(NonceIssuer::new("other", 1000).check(&nonce, 5500), NonceCheck::Invalid);
        assert_eq!(n.check("1388.abc", 5500), NonceCheck::Invalid);
        assert_eq!(n.check("zz", 5500), NonceCheck::Invalid);
        assert_eq!(n.check("1388.1.abc", 5500), NonceCheck::Invalid);
    }

    #[test]
    fn a_nonce_is_spent_once() {
        let mut n = NonceIssuer::new("s", 1000);
        let nonce = n.issue(5000);
        assert!(n.consume(&nonce, 5100));
        assert!(!n.consume(&nonce, 5200), "replay");
        n.expire(7000);
        assert!(n.used.is_empty());
        assert_eq!(n.check(&nonce, 7000), NonceCheck::Stale, "and once forgotten it has expired anyway");
    }
}

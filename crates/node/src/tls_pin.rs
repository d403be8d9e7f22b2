//! Per-account certificate pinning for PBXs reached over TLS (`tls_pin` in the trunk file).
//!
//! Many PBXs present a self-signed certificate. Adding each one to `sip.tls_ca` would make it a
//! CA for every account the node serves; a pin trusts exactly that certificate, for that account's
//! address only. A pinned peer is checked by its leaf certificate's SHA-256 and by nothing else
//! (no chain, name or expiry: the operator vouched for this certificate); the handshake's
//! signatures are still verified with it, so only the key's holder passes.
//!
//! The pins live in the replicated trunks; [`keep_pins`] reads them once a second and hands
//! changed configs to the transports.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hatrunk_core::trunk::{AuthMode, Role, Transport, Trunk};
use hatrunk_sip::transport::Transports;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::config::NodeConfig;
use crate::dns::{DnsCache, DnsKey};
use crate::error::NodeError;
use crate::store::TrunkStore;

/// Pins wanted per PBX address. Accounts that share an address share one TLS connection, so
/// their pins are pooled there.
pub type Wanted = BTreeMap<SocketAddr, Vec<[u8; 32]>>;

/// The pins the trunks ask for, by the address their PBX is reached at (every address its name
/// resolves to at `now`, for a target given by name).
pub fn wanted(trunks: &[Arc<Trunk>], dns: &DnsCache, now: u64) -> Wanted {
    let mut out = Wanted::new();
    for t in trunks {
        for a in [Role::Primary, Role::Secondary].into_iter().filter_map(|r| t.account(r)) {
            if a.auth != AuthMode::Ip || a.transport != Transport::Tls || a.tls_pins.is_empty() {
                continue;
            }
            let Some(s) = a.sip_target() else {
                continue;
            };
            let addrs: Vec<SocketAddr> = match s.host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, s.port)],
                Err(_) => {
                    let key = DnsKey::of(&s, a.transport);
                    dns.targets(&key, now).map(|ts| ts.iter().map(|t| t.addr).collect()).unwrap_or_default()
                }
            };
            for addr in addrs {
                let pins = out.entry(addr).or_default();
                for p in &a.tls_pins {
                    let mut fp = [0u8; 32];
                    if hex::decode_to_slice(p, &mut fp).is_ok() && !pins.contains(&fp) {
                        pins.push(fp);
                    }
                }
            }
        }
    }
    out
}

/// Keep the transports' pinned peers, and the names peers reached over TLS go by, in step with
/// the trunks and what their names resolve to, four times a second, for as long as the transports
/// live.
pub async fn keep_pins(
    mut pinned: PinnedPeers,
    store: Arc<dyn TrunkStore>,
    dns: Arc<DnsCache>,
    clock: fn() -> u64,
    transports: Weak<Transports>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut names = HashMap::new();
    loop {
        tick.tick().await;
        let Some(t) = transports.upgrade() else { return };
        if let Some(peers) = pinned.refresh(&store.list(), &dns, clock()) {
            t.set_tls_peers(peers);
        }
        let now_names = dns.tls_names();
        if now_names != names {
            t.set_tls_names(now_names.clone());
            names = now_names;
        }
    }
}

/// Builds client configs for pinned peers, presenting the node's SIP certificate when it has one.
pub struct PinnedPeers {
    identity: Option<crate::tls::SipIdentity>,
    last: Wanted,
}

impl PinnedPeers {
    pub fn new(cfg: &NodeConfig) -> Result<PinnedPeers, NodeError> {
        Ok(PinnedPeers { identity: crate::tls::sip_identity(cfg)?, last: Wanted::new() })
    }

    /// The configs to use now, when the trunks' pins changed since the last call.
    pub fn refresh(&mut self, trunks: &[Arc<Trunk>], dns: &DnsCache, now: u64) -> Option<HashMap<SocketAddr, Arc<rustls::ClientConfig>>> {
        let want = wanted(trunks, dns, now);
        if want == self.last {
            return None;
        }
        let mut out = HashMap::new();
        for (addr, pins) in &want {
            match self.client(pins) {
                Ok(c) => {
                    out.insert(*addr, c);
                }
                Err(e) => tracing::error!(%addr, error = %e, "cannot build the pinned TLS client; the node-wide verification applies"),
            }
        }
        tracing::info!(peers = out.len(), "pinned TLS peers updated");
        self.last = want;
        Some(out)
    }

    fn client(&self, pins: &[[u8; 32]]) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned { pins: pins.to_vec(), algs: provider.signature_verification_algorithms });
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        Ok(Arc::new(match &self.identity {
            Some((chain, key)) => b.with_client_auth_cert(chain.clone(), key.clone_key())?,
            None => b.with_no_client_auth(),
        }))
    }
}

/// Trusts a server by its leaf certificate's fingerprint.
#[derive(Debug)]
struct Pinned {
    pins: Vec<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&fp) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(id: &str, target: &str, transport: &str, pins: &[&str]) -> Arc<Trunk> {
        let pins = pins.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
        let pin_line = if pins.is_empty() || transport != "tls" { String::new() } else { format!("tls_pin = [{pins}]\n") };
        hatrunk_core::trunk::parse_trunk(&format!(
            "id = \"{id}\"\nnumbers = [\"{}\"]\nmax_concurrent_calls = 1\nmode = \"only-primary\"\n[primary]\nauth = \"ip\"\n\
             target = \"{target}\"\ntransport = \"{transport}\"\nallowed_ips = [\"192.0.2.1/32\"]\n{pin_line}",
            6_560_000_000u64 + id.len() as u64
        ))
        .map(Arc::new)
        .expect("trunk")
    }

    #[test]
    fn pins_are_gathered_by_pbx_address_and_only_for_tls_accounts() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let trunks = [
            trunk("t", "sip:192.0.2.10:5061", "tls", &[&a]),
            trunk("tt", "sip:192.0.2.10:5061", "tls", &[&b, &a]),
            trunk("ttt", "sip:192.0.2.11:5061", "tls", &[]),
            trunk("tttt", "sip:192.0.2.12:5060", "udp", &[]),
            trunk("named", "sips:sbc.example.com", "tls", &[&b]),
        ];
        // the name resolves to two addresses: both carry its pin
        let dns = DnsCache::default();
        let resolved = |ip: [u8; 4]| hatrunk_core::srv::SrvTarget { priority: 0, weight: 0, addr: SocketAddr::from((ip, 5061)) };
        let key = DnsKey { host: "sbc.example.com".into(), port: None, transport: Transport::Tls };
        let targets = vec![resolved([192, 0, 2, 20]), resolved([192, 0, 2, 21])];
        dns.put(key, crate::dns::Entry { targets, fresh_until: 10, stale_until: 10, problem: None });
        let w = wanted(&trunks, &dns, 0);
        let addr: SocketAddr = "192.0.2.10:5061".parse().expect("addr");
        let named: Vec<SocketAddr> = ["192.0.2.20:5061", "192.0.2.21:5061"].iter().map(|a| a.parse().expect("addr")).collect();
        assert_eq!(w.keys().collect::<Vec<_>>(), vec![&addr, &named[0], &named[1]]);
        assert_eq!(w[&addr], vec![[0xaa; 32], [0xbb; 32]]);
        assert_eq!(w[&named[1]], vec![[0xbb; 32]]);
        assert_eq!(dns.tls_names().get(&named[0]).map(String::as_str), Some("sbc.example.com"), "its certificate must name it");
        assert!(!wanted(&trunks, &dns, 10).contains_key(&named[0]), "an unusable answer pins nothing");
    }

    #[test]
    fn the_verifier_takes_the_pinned_certificate_and_nothing_else() {
        let v = Pinned {
            pins: vec![Sha256::digest(b"the pbx's certificate").into()],
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let name = ServerName::IpAddress(IpAddr::from([192, 0, 2, 10]).into());
        let check = |der: &'static [u8]| v.verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now());
        assert!(check(b"the pbx's certificate").is_ok());
        assert!(check(b"another certificate").is_err());
    }

    #[test]
    fn configs_are_rebuilt_only_when_the_pins_change() {
        let mut p = PinnedPeers { identity: None, last: Wanted::new() };
        let trunks = [trunk("t", "sip:192.0.2.10:5061", "tls", &[&"aa".repeat(32)])];
        let dns = DnsCache::default();
        assert_eq!(p.refresh(&trunks, &dns, 0).map(|m| m.len()), Some(1));
        assert!(p.refresh(&trunks, &dns, 0).is_none());
        assert_eq!(p.refresh(&[], &dns, 0).map(|m| m.len()), Some(0), "pins removed: back to the node-wide verification");
    }
}

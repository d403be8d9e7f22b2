//! TLS material from the node config: the cluster's mutual-TLS settings for tonic (server and
//! dialer) and the SIP listener's and outbound connections' rustls configs. Every file problem is
//! a config error naming the field, found at start rather than at the first handshake.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{NodeConfig, TlsSection};
use crate::error::NodeError;

/// Debian's (and most distributions') bundle of public roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn bad(field: &str, reason: impl Into<String>) -> NodeError {
    NodeError::Config { field: field.into(), reason: reason.into() }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| bad(field, format!("{}: {e}", path.display())))
}

fn certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    certs_in(field, path, &read(field, path)?)
}

fn certs_in(field: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(field, format!("{}: not PEM certificates: {e}", path.display())))?;
    if v.is_empty() {
        return Err(bad(field, format!("{}: no certificate in it", path.display())));
    }
    Ok(v)
}

fn key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, NodeError> {
    key_in(field, path, &read(field, path)?)
}

fn key_in(field: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, NodeError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(field, format!("{}: no usable private key: {e}", path.display())))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cluster's mutual TLS, loaded and checked.
#[derive(Clone)]
pub struct ClusterTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

/// Load `[tls]`; `None` when the cluster runs without TLS. `token` makes a client certificate
/// optional at the handshake (the admin gate then asks for the token instead).
pub fn cluster(t: &TlsSection, token: bool) -> Result<Option<ClusterTls>, NodeError> {
    let (Some(ca), Some(cert), Some(key_path)) = (&t.ca, &t.cert, &t.key) else {
        return Ok(None);
    };
    // parse now so a wrong file is named at start, not at the first handshake
    let ca_pem = read("tls.ca", ca)?;
    certs_in("tls.ca", ca, &ca_pem)?;
    let cert_pem = read("tls.cert", cert)?;
    certs_in("tls.cert", cert, &cert_pem)?;
    let key_pem = read("tls.key", key_path)?;
    key_in("tls.key", key_path, &key_pem)?;
    let identity = Identity::from_pem(&cert_pem, &key_pem);
    let server = ServerTlsConfig::new()
        .identity(identity.clone())
        .client_ca_root(Certificate::from_pem(&ca_pem))
        .client_auth_optional(token)
        .timeout(std::time::Duration::from_secs(10));
    let client =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)).identity(identity).domain_name(t.server_name.clone());
    Ok(Some(ClusterTls { server, client }))
}

/// The SIP `tls:` listener's server config (`None` without a `tls:` listener).
pub fn sip_server(cfg: &NodeConfig) -> Result<Option<Arc<rustls::ServerConfig>>, NodeError> {
    let (Some(cert), Some(key_path)) = (&cfg.sip.tls_cert, &cfg.sip.tls_key) else {
        return Ok(None);
    };
    let chain = certs("sip.tls_cert", cert)?;
    let k = key("sip.tls_key", key_path)?;
    let sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("sip.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, k)
        .map_err(|e| bad("sip.tls_key", format!("does not fit the certificate: {e}")))?;
    Ok(Some(Arc::new(sc)))
}

/// How we verify PBXs and carriers over TLS: the system's public roots plus `sip.tls_ca`,
/// presenting our SIP certificate when one is configured and the peer asks for it.
pub fn sip_client(cfg: &NodeConfig) -> Result<Arc<rustls::ClientConfig>, NodeError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(pem) = std::fs::read(SYSTEM_ROOTS) {
        for c in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(c); // a root the verifier cannot use is skipped, as every TLS stack does
        }
    }
    if let Some(ca) = &cfg.sip.tls_ca {
        for c in certs("sip.tls_ca", ca)? {
            roots.add(c).map_err(|e| bad("sip.tls_ca", format!("{}: {e}", ca.display())))?;
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("sip.tls_ca", e.to_string()))?
        .with_root_certificates(roots);
    let cc = match sip_identity(cfg)? {
        Some((chain, k)) => {
            b.with_client_auth_cert(chain, k).map_err(|e| bad("sip.tls_key", format!("does not fit the certificate: {e}")))?
        }
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cc))
}

/// The node's SIP certificate chain and key, offered to TLS peers that ask for a client certificate.
pub type SipIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `sip.tls_cert` and `sip.tls_key`, when both are set.
pub fn sip_identity(cfg: &NodeConfig) -> Result<Option<SipIdentity>, NodeError> {
    match (&cfg.sip.tls_cert, &cfg.sip.tls_key) {
        (Some(cert), Some(k)) => Ok(Some((certs("sip.tls_cert", cert)?, key("sip.tls_key", k)?))),
        _ => Ok(None),
    }
}

/// The admin token from `admin.token_file` (its first line, trimmed).
pub fn admin_token(cfg: &NodeConfig) -> Result<Option<Arc<str>>, NodeError> {
    let Some(path) = &cfg.admin.token_file else {
        return Ok(None);
    };
    let text = String::from_utf8(read("admin.token_file", path)?).map_err(|_| bad("admin.token_file", "not UTF-8"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < 16 {
        return Err(bad("admin.token_file", "the token must be at least 16 characters"));
    }
    Ok(Some(token.into()))
}

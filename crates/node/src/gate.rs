//! Who may call the node's gRPC services. Cluster RPCs (vote, append, snapshot, heartbeat, info)
//! need a client certificate from the cluster CA whenever the cluster runs TLS; admin RPCs need
//! either such a certificate or the admin bearer token. rustls has already verified any
//! certificate the peer presented against the cluster CA before a request gets here, so a present
//! certificate is a valid one.

use std::sync::Arc;

use hatrunk_sip::digest::constant_time_eq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks each request against the node's credentials.
#[derive(Clone)]
pub struct Gate {
    /// The cluster runs mutual TLS.
    pub tls: bool,
    /// The admin token, if one is configured.
    pub token: Option<Arc<str>>,
    /// Guarding the admin service (the token is accepted) rather than the cluster service.
    pub admin: bool,
}

impl Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let has_cert = req.peer_certs().is_some_and(|c| !c.is_empty());
        if self.tls && has_cert {
            return Ok(req);
        }
        if !self.admin {
            return if self.tls { Err(Status::unauthenticated("cluster RPCs need a certificate from the cluster CA")) } else { Ok(req) };
        }
        match &self.token {
            Some(t) if bearer(&req).is_some_and(|b| constant_time_eq(b.as_bytes(), t.as_bytes())) => Ok(req),
            Some(_) => Err(Status::unauthenticated("the admin API needs a cluster client certificate or a valid admin token")),
            None if self.tls => Err(Status::unauthenticated("the admin API needs a cluster client certificate")),
            None => Ok(req),
        }
    }
}

fn bearer(req: &Request<()>) -> Option<&str> {
    req.metadata().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Adds the admin token to outgoing admin calls (the CLI, and a node passing a call on to the
/// leader); does nothing without one.
#[derive(Clone, Default)]
pub struct AddToken(pub Option<Arc<str>>);

impl Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| Status::invalid_argument("the admin token has characters a header cannot carry"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = v {
            r.metadata_mut().insert("authorization", v.parse().expect("ascii"));
        }
        r
    }

    #[test]
    fn the_admin_token_must_match_exactly() {
        let mut g = Gate { tls: false, token: Some("0123456789abcdef".into()), admin: true };
        assert!(g.call(with_auth(Some("Bearer 0123456789abcdef"))).is_ok());
        for bad in [None, Some("Bearer 0123456789abcdeg"), Some("Bearer 0123456789abcde"), Some("0123456789abcdef")] {
            let e = g.call(with_auth(bad)).expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn with_tls_a_request_without_a_certificate_is_refused() {
        let mut cluster = Gate { tls: true, token: None, admin: false };
        assert_eq!(cluster.call(with_auth(None)).expect_err("refused").code(), tonic::Code::Unauthenticated);
        // the admin token never opens the cluster service
        let mut cluster = Gate { tls: true, token: Some("0123456789abcdef".into()), admin: false };
        assert!(cluster.call(with_auth(Some("Bearer 0123456789abcdef"))).is_err());
        let mut admin = Gate { tls: true, token: None, admin: true };
        assert!(admin.call(with_auth(None)).is_err());
    }
}

//! The client verbs: one admin RPC each, tried against each endpoint in turn until one answers.

use std::process::ExitCode;

use hatrunk_node::admin::pb::{self, admin_client::AdminClient};
use hatrunk_node::gate::AddToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::output;
use crate::{ClusterCmd, Cmd, Creds, Format, TrunkCmd};

type Client = AdminClient<InterceptedService<Channel, AddToken>>;

/// Exit code for credentials the CLI cannot read or the cluster does not accept.
const AUTH_EXIT: u8 = 5;

fn read(what: &str, p: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

fn tls(creds: &Creds) -> Result<Option<ClientTlsConfig>, String> {
    let Some(ca) = &creds.ca else {
        return Ok(None);
    };
    let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?)).domain_name(creds.server_name.clone());
    if let (Some(c), Some(k)) = (&creds.cert, &creds.key) {
        t = t.identity(Identity::from_pem(read("--cert", c)?, read("--key", k)?));
    }
    Ok(Some(t))
}

fn token(creds: &Creds) -> Result<Option<std::sync::Arc<str>>, String> {
    let Some(p) = &creds.token_file else {
        return Ok(None);
    };
    let text = String::from_utf8(read("--token-file", p)?).map_err(|_| format!("--token-file {}: not UTF-8", p.display()))?;
    Ok(Some(text.lines().next().unwrap_or("").trim().into()))
}

async fn connect(endpoints: &str, tls: Option<ClientTlsConfig>, token: AddToken) -> Result<Client, String> {
    let mut last = String::from("no endpoints given");
    for ep in endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bare = ep.trim_start_matches("http://").trim_start_matches("https://");
        let url = format!("{}://{bare}", if tls.is_some() { "https" } else { "http" });
        let ch = match Channel::from_shared(url.clone()) {
            Ok(c) => c.connect_timeout(std::time::Duration::from_secs(3)).timeout(std::time::Duration::from_secs(30)),
            Err(e) => {
                last = format!("{ep}: {e}");
                continue;
            }
        };
        let ch = match &tls {
            Some(t) => match ch.tls_config(t.clone()) {
                Ok(c) => c,
                Err(e) => return Err(format!("{ep}: {e}")),
            },
            None => ch,
        };
        match ch.connect().await {
            Ok(c) => return Ok(AdminClient::with_interceptor(c, token)),
            Err(e) => last = format!("{ep}: {}", chain(&e)),
        }
    }
    Err(last)
}

/// An error with its causes: tonic's own message is only "transport error".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn refused(s: tonic::Status) -> ExitCode {
    let mut why = s.message().to_string();
    if let Some(src) = std::error::Error::source(&s) {
        why = format!("{why}: {}", chain(src));
    }
    eprintln!("error: {why}");
    if ["broken pipe", "connection closed", "canceled"].iter().any(|w| why.contains(w)) {
        eprintln!("hint: a node that runs TLS closes connections without a client certificate from its CA: pass --ca, --cert and --key");
    }
    let tls_refused = ["certificate", "CertificateRequired", "handshake", "UnknownCA", "BadCertificate"].iter().any(|w| why.contains(w));
    match s.code() {
        _ if tls_refused => ExitCode::from(AUTH_EXIT),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ExitCode::from(AUTH_EXIT),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

pub async fn dispatch(cmd: Cmd, endpoints: &str, creds: &Creds, fmt: Format) -> ExitCode {
    let (tls, token) = match (tls(creds), token(creds)) {
        (Ok(t), Ok(k)) => (t, AddToken(k)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut c = match connect(endpoints, tls, token).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no node reachable ({e})");
            return ExitCode::from(3);
        }
    };
    let r = match cmd {
        Cmd::Trunk { cmd: TrunkCmd::Apply { file, force } } => {
            let toml = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            c.apply_trunk(pb::ApplyTrunkRequest { toml, force }).await.map(|r| output::trunk(&r.into_inner(), fmt, "applied"))
        }
        Cmd::Trunk { cmd: TrunkCmd::Get { id } } => c.get_trunk(pb::TrunkId { id }).await.map(|r| output::trunk(&r.into_inner(), fmt, "")),
        Cmd::Trunk { cmd: TrunkCmd::List } => c.list_trunks(pb::Empty {}).await.map(|r| output::trunks(&r.into_inner(), fmt)),
        Cmd::Trunk { cmd: TrunkCmd::Delete { id, force } } => c
            .delete_trunk(pb::DeleteTrunkRequest { id: id.clone(), force })
            .await
            .map(|_| output::done(fmt, &format!("trunk {id} deleted"))),
        Cmd::Calls { trunk } => {
            c.calls(pb::CallsRequest { trunk: trunk.unwrap_or_default() }).await.map(|r| output::calls(&r.into_inner(), fmt))
        }
        Cmd::Cluster { cmd: ClusterCmd::Status } => c.cluster_status(pb::Empty {}).await.map(|r| output::status(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Members } => c.cluster_status(pb::Empty {}).await.map(|r| output::members(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Init } => c.cluster_init(pb::Empty {}).await.map(|r| output::status(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Join { addr, learner } } => {
            c.cluster_join(pb::JoinRequest { addr, learner }).await.map(|r| output::members(&r.into_inner(), fmt))
        }
        Cmd::Cluster { cmd: ClusterCmd::Remove { id, force, cancel } } => loop {
            match c.cluster_remove(pb::RemoveRequest { id, force, cancel }).await {
                Err(s) if s.code() == tonic::Code::Aborted && s.message().starts_with("draining") => {
                    eprintln!(
                        "{} (waiting for its calls to end; Ctrl-C stops waiting and leaves it draining, --force removes it now)",
                        s.message()
                    );
                }
                other => break other.map(|r| output::members(&r.into_inner(), fmt)),
            }
        },
        Cmd::Cluster { cmd: ClusterCmd::TransferLeader { id } } => {
            c.transfer_leader(pb::NodeId { id }).await.map(|r| output::status(&r.into_inner(), fmt))
        }
        Cmd::Run { .. } | Cmd::Demo(_) | Cmd::Certs { .. } => return ExitCode::from(2),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(s) => refused(s),
    }
}

//! The client verbs: one admin RPC each, tried against each endpoint in turn until one answers.

use std::process::ExitCode;

use hatrunk_node::admin::pb::{self, admin_client::AdminClient};
use tonic::transport::Channel;

use crate::output;
use crate::{ClusterCmd, Cmd, Format, TrunkCmd};

async fn connect(endpoints: &str) -> Result<AdminClient<Channel>, String> {
    let mut last = String::from("no endpoints given");
    for ep in endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let url = if ep.starts_with("http") { ep.to_string() } else { format!("http://{ep}") };
        let ch = match Channel::from_shared(url.clone()) {
            Ok(c) => c.connect_timeout(std::time::Duration::from_secs(3)).timeout(std::time::Duration::from_secs(30)),
            Err(e) => {
                last = format!("{ep}: {e}");
                continue;
            }
        };
        match ch.connect().await {
            Ok(c) => return Ok(AdminClient::new(c)),
            Err(e) => last = format!("{ep}: {e}"),
        }
    }
    Err(last)
}

fn refused(s: tonic::Status) -> ExitCode {
    eprintln!("error: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

pub async fn dispatch(cmd: Cmd, endpoints: &str, fmt: Format) -> ExitCode {
    let mut c = match connect(endpoints).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no node reachable ({e})");
            return ExitCode::from(3);
        }
    };
    let r = match cmd {
        Cmd::Trunk { cmd: TrunkCmd::Apply { file } } => {
            let toml = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            c.apply_trunk(pb::ApplyTrunkRequest { toml }).await.map(|r| output::trunk(&r.into_inner(), fmt, "applied"))
        }
        Cmd::Trunk { cmd: TrunkCmd::Get { id } } => c.get_trunk(pb::TrunkId { id }).await.map(|r| output::trunk(&r.into_inner(), fmt, "")),
        Cmd::Trunk { cmd: TrunkCmd::List } => c.list_trunks(pb::Empty {}).await.map(|r| output::trunks(&r.into_inner(), fmt)),
        Cmd::Trunk { cmd: TrunkCmd::Delete { id } } => {
            c.delete_trunk(pb::TrunkId { id: id.clone() }).await.map(|_| output::done(fmt, &format!("trunk {id} deleted")))
        }
        Cmd::Calls { trunk } => {
            c.calls(pb::CallsRequest { trunk: trunk.unwrap_or_default() }).await.map(|r| output::calls(&r.into_inner(), fmt))
        }
        Cmd::Cluster { cmd: ClusterCmd::Status } => c.cluster_status(pb::Empty {}).await.map(|r| output::status(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Members } => c.cluster_status(pb::Empty {}).await.map(|r| output::members(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Init } => c.cluster_init(pb::Empty {}).await.map(|r| output::status(&r.into_inner(), fmt)),
        Cmd::Cluster { cmd: ClusterCmd::Join { addr, learner } } => {
            c.cluster_join(pb::JoinRequest { addr, learner }).await.map(|r| output::members(&r.into_inner(), fmt))
        }
        Cmd::Cluster { cmd: ClusterCmd::Remove { id } } => {
            c.cluster_remove(pb::NodeId { id }).await.map(|r| output::members(&r.into_inner(), fmt))
        }
        Cmd::Cluster { cmd: ClusterCmd::TransferLeader { id } } => {
            c.transfer_leader(pb::NodeId { id }).await.map(|r| output::status(&r.into_inner(), fmt))
        }
        Cmd::Run { .. } | Cmd::Demo(_) => return ExitCode::from(2),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(s) => refused(s),
    }
}

//! The admin gRPC service (`proto/admin.proto`) the CLI talks to. Protobuf stays here: domain types
//! are converted at this edge. Every refusal is a gRPC status with a message naming what is wrong.
//! Any member serves any verb: membership changes are forwarded to the leader, `trunk get` is a
//! linearizable read, and cluster status is the leader's view. Policy is not decided here: membership
//! rules live in `hatrunk_consensus::membership`, every clock read goes through the injected clock.

use std::sync::Arc;
use std::time::Duration;

use hatrunk_consensus::membership::Removal;
use hatrunk_consensus::raft::{Consensus, Read, ReadReply};
use hatrunk_consensus::Expect;
use hatrunk_core::trunk::{parse_trunk_at, Role, Trunk};
use tonic::{Request, Response, Status};

use crate::admission::Admission;
use crate::error::NodeError;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

pub mod pb {
    tonic::include_proto!("hatrunk.admin.v1");
}

use pb::admin_client::AdminClient;
use pb::admin_server::Admin;

pub struct AdminService {
    pub store: Arc<dyn TrunkStore>,
    pub admission: Arc<dyn Admission>,
    pub status: Arc<SharedStatus>,
    pub consensus: Arc<Consensus>,
    pub health: Arc<crate::cluster_health::ClusterHealth>,
    pub timing: hatrunk_consensus::raft::RaftTiming,
    /// Carried on calls passed on to the leader.
    pub token: crate::gate::AddToken,
    /// The node's clock (wall ms; simulated time in the simulation), as the call path reads it.
    pub clock: fn() -> u64,
}

type LeaderClient = AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, crate::gate::AddToken>>;

/// How long one `cluster remove` request waits for a draining node's calls (the CLI asks again).
const DRAIN_WAIT: Duration = Duration::from_secs(15);
/// How long `cluster status` waits for the leader's view before answering with its own.
const STATUS_FROM_LEADER: Duration = Duration::from_secs(1);

/// Largest trunk file accepted over the API.
const MAX_TRUNK_FILE: usize = 64 * 1024;

fn to_status(e: NodeError) -> Status {
    match e {
        NodeError::Trunk(e) => Status::invalid_argument(e.to_string()),
        NodeError::Refused(m) => Status::failed_precondition(m),
        NodeError::TrunkNotFound(id) => Status::not_found(format!("trunk {id} not found")),
        e @ NodeError::Stale { .. } => Status::failed_precondition(format!(
            "{e}; read it again (`hatrunk trunk get`) and apply your change to that, or apply with --force to overwrite it"
        )),
        NodeError::Consensus(hatrunk_consensus::ConsensusError::Unavailable(m)) => Status::unavailable(m),
        NodeError::Consensus(hatrunk_consensus::ConsensusError::Refused(m)) => Status::failed_precondition(m),
        NodeError::Consensus(hatrunk_consensus::ConsensusError::Invalid(m)) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

impl AdminService {
    fn reply(&self, t: &Trunk, revision: u64) -> pb::TrunkReply {
        let mut state = serde_json::Map::new();
        for role in [Role::Primary, Role::Secondary] {
            if t.account(role).is_none() {
                continue;
            }
            let s = self.status.account(&t.id, role);
            let name = if role == Role::Primary { "primary" } else { "secondary" };
            // a binding made through another node is known from the replicated state
            let registered = s.registered.or_else(|| {
                let user = t.account(role)?.username.clone()?;
                let (contact, _, expires_ms) = self.store.registration(&user)?;
                (expires_ms > (self.clock)()).then_some(contact)
            });
            state.insert(name.into(), serde_json::json!({ "health": s.health.state, "registered": registered }));
        }
        let mut trunk = t.redacted();
        if let Some(o) = trunk.as_object_mut() {
            o.insert("revision".into(), revision.into());
        }
        pb::TrunkReply { trunk_json: trunk.to_string(), state_json: serde_json::Value::Object(state).to_string(), revision }
    }

    /// A trunk and its revision, read linearizably.
    async fn read_trunk(&self, id: &str) -> Result<Option<(Trunk, u64)>, Status> {
        let ReadReply::Trunk(t) = self.consensus.read(Read::Trunk(id.to_string())).await.map_err(|e| to_status(e.into()))?;
        Ok(t)
    }

    async fn write_drain(&self, node: &str, on: bool) -> Result<(), Status> {
        let cmd = hatrunk_consensus::Command::Drain { node: node.to_string(), on };
        self.consensus.write(cmd).await.map(|_| ()).map_err(|e| to_status(e.into()))
    }

    /// Drain node `id` before its removal: it takes no new calls from its next lease renewal on.
    /// Waits up to [`DRAIN_WAIT`] for the slots it holds to go back as its calls end, then answers
    /// ABORTED with what is left, and the CLI asks again.
    async fn drain(&self, id: u64, name: &str) -> Result<(), Status> {
        self.write_drain(name, true).await?;
        let t0 = tokio::time::Instant::now();
        loop {
            let held: u32 = self.consensus.local(|s| s.shares_of(name).iter().map(|(_, n)| n).sum());
            if held == 0 {
                tracing::info!(node = id, "drained");
                return Ok(());
            }
            if t0.elapsed() >= DRAIN_WAIT {
                return Err(Status::aborted(format!("draining: node {id} still holds {held} slot(s) for its calls")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The leader's admin client, when this node is not the leader.
    async fn leader(&self) -> Result<Option<LeaderClient>, Status> {
        if self.consensus.is_leader() {
            return Ok(None);
        }
        let (_, addr) =
            self.consensus.leader_addr().ok_or_else(|| Status::unavailable("no leader elected; is a majority of voters up?"))?;
        let ch = self.consensus.dial(&addr).map_err(Status::internal)?;
        Ok(Some(AdminClient::with_interceptor(ch, self.token.clone())))
    }

    /// Status as this node sees it: health from the failure detector (answers heartbeats and
    /// reaches a majority), read on the node's clock.
    async fn status_reply(&self) -> pb::ClusterStatusReply {
        let view = crate::cluster_health::ClusterView::view(&*self.health, (self.clock)());
        let s = self.consensus.status(|id| view.get(id).is_some_and(|h| h.alive && h.quorum)).await;
        pb::ClusterStatusReply {
            leader: s.leader.unwrap_or(0),
            term: s.term,
            commit_index: s.applied_index,
            applied_index: s.applied_index,
            initialized: s.initialized,
            members: s
                .members
                .into_iter()
                .map(|m| pb::Member {
                    id: m.id,
                    name: m.info.name,
                    region: m.info.region,
                    zone: m.info.zone,
                    role: m.info.role.to_string(),
                    voter: m.voter,
                    leader: m.leader,
                    healthy: m.healthy,
                    sip: m.info.sip_addr,
                    cluster: m.info.cluster_addr,
                    lag: m.lag,
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply_trunk(&self, req: Request<pb::ApplyTrunkRequest>) -> Result<Response<pb::TrunkReply>, Status> {
        let pb::ApplyTrunkRequest { toml: text, force } = req.into_inner();
        if text.len() > MAX_TRUNK_FILE {
            return Err(Status::invalid_argument(format!("trunk file larger than {MAX_TRUNK_FILE} bytes")));
        }
        let (trunk, named) = parse_trunk_at(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = trunk.id.clone();
        // without a revision in the file, the one read now (linearizable): a write delayed on its
        // way to the leader can then never overwrite a newer acknowledged one
        let expect = match (force, named) {
            (true, _) => Expect::Any,
            (false, Some(r)) => Expect::read_at(r),
            (false, None) => Expect::read_at(self.read_trunk(&id).await?.map(|(_, r)| r).unwrap_or(0)),
        };
        let revision = self.store.apply(trunk.clone(), expect).await.map_err(to_status)?;
        tracing::info!(trunk = %id, revision, forced = force, "trunk applied");
        Ok(Response::new(self.reply(&trunk, revision)))
    }

    async fn get_trunk(&self, req: Request<pb::TrunkId>) -> Result<Response<pb::TrunkReply>, Status> {
        let id = req.into_inner().id;
        let (t, revision) = self.read_trunk(&id).await?.ok_or_else(|| Status::not_found(format!("trunk {id} not found")))?;
        Ok(Response::new(self.reply(&t, revision)))
    }

    async fn list_trunks(&self, _: Request<pb::Empty>) -> Result<Response<pb::TrunkList>, Status> {
        Ok(Response::new(pb::TrunkList { trunks: self.store.list().iter().map(|t| self.reply(t, self.store.revision(&t.id))).collect() }))
    }

    async fn delete_trunk(&self, req: Request<pb::DeleteTrunkRequest>) -> Result<Response<pb::Empty>, Status> {
        let pb::DeleteTrunkRequest { id, force } = req.into_inner();
        self.store.delete(id.clone(), force).await.map_err(to_status)?;
        tracing::info!(trunk = %id, forced = force, "trunk deleted");
        Ok(Response::new(pb::Empty {}))
    }

    async fn calls(&self, req: Request<pb::CallsRequest>) -> Result<Response<pb::CallsReply>, Status> {
        let only = req.into_inner().trunk;
        if !only.is_empty() && self.store.get(&only).is_none() {
            return Err(Status::not_found(format!("trunk {only} not found")));
        }
        let usage: std::collections::HashMap<String, u32> = self.admission.usage().into_iter().collect();
        // the cluster's row first (scripts read it as the trunk's use), then each node's part
        let pools = self
            .store
            .list()
            .iter()
            .filter(|t| only.is_empty() || t.id == only)
            .flat_map(|t| {
                let limit = t.max_concurrent_calls;
                let parts = self.admission.usage_by_node(&t.id);
                // the total from the same read as its parts when there are parts, so they add up
                let total = if parts.is_empty() { usage.get(&t.id).copied().unwrap_or(0) } else { parts.iter().map(|(_, n)| n).sum() };
                let cluster = pb::PoolUse { trunk: t.id.clone(), node: "cluster".into(), in_use: total, limit };
                let nodes = parts.into_iter().map(move |(node, in_use)| pb::PoolUse { trunk: t.id.clone(), node, in_use, limit });
                std::iter::once(cluster).chain(nodes)
            })
            .collect();
        Ok(Response::new(pb::CallsReply { pools }))
    }

    async fn cluster_status(&self, req: Request<pb::Empty>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        // the leader's view, unless it does not answer within a second (lost with its region, and
        // silent across a WAN): then this node's own view, at once
        if let Ok(Some(mut leader)) = self.leader().await {
            if let Ok(Ok(r)) = tokio::time::timeout(STATUS_FROM_LEADER, leader.cluster_status(req.into_inner())).await {
                return Ok(r);
            }
        }
        Ok(Response::new(self.status_reply().await))
    }

    async fn cluster_init(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let created = self.consensus.initialize().await.map_err(|e| to_status(e.into()))?;
        if created {
            tracing::info!("initialised a one-voter cluster");
        }
        for _ in 0..50 {
            if self.consensus.leader_addr().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Response::new(self.status_reply().await))
    }

    async fn cluster_join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        if let Some(mut leader) = self.leader().await? {
            return leader.cluster_join(req.into_inner()).await;
        }
        let pb::JoinRequest { addr, learner } = req.into_inner();
        let (id, info) = self.consensus.join(&addr, learner).await.map_err(|e| to_status(e.into()))?;
        tracing::info!(node = id, %info, learner, "node joined");
        Ok(Response::new(self.status_reply().await))
    }

    async fn cluster_remove(&self, req: Request<pb::RemoveRequest>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        if let Some(mut leader) = self.leader().await? {
            return leader.cluster_remove(req.into_inner()).await;
        }
        let pb::RemoveRequest { id, force, cancel } = req.into_inner();
        let view = crate::cluster_health::ClusterView::view(&*self.health, (self.clock)());
        let alive = |v: u64| view.get(v).is_some_and(|h| h.alive);
        let member = self.consensus.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned();
        let info = member.ok_or_else(|| Status::not_found(format!("node {id} is not a member")))?;
        if cancel {
            self.write_drain(&info.name, false).await?;
            tracing::info!(node = id, "drain cancelled");
            return Ok(Response::new(self.status_reply().await));
        }
        if !force && alive(id) && info.role == hatrunk_consensus::NodeRole::Sip {
            self.drain(id, &info.name).await?;
        }
        match self.consensus.remove_member(id, alive, &self.timing).await.map_err(|e| to_status(e.into()))? {
            Removal::Removed(info) => tracing::info!(node = id, %info, forced = force, "node removed"),
            Removal::HandedOff(to) => {
                tracing::info!(node = id, to, "leadership handed over before removing this node");
                return match self.leader().await? {
                    Some(mut leader) => leader.cluster_remove(pb::RemoveRequest { id, force: true, cancel: false }).await,
                    None => Err(Status::unavailable("leadership was handed over but the new leader is not known here yet; retry")),
                };
            }
        }
        Ok(Response::new(self.status_reply().await))
    }

    async fn transfer_leader(&self, req: Request<pb::NodeId>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        if let Some(mut leader) = self.leader().await? {
            return leader.transfer_leader(req.into_inner()).await;
        }
        let id = req.into_inner().id;
        let m = self.consensus.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(Status::not_found(format!("node {id} is not a member")));
        }
        self.consensus.transfer_leader(id, &self.timing).await.map_err(|e| to_status(e.into()))?;
        tracing::info!(node = id, "leadership handed over");
        Ok(Response::new(self.status_reply().await))
    }
}

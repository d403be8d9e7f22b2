//! The admin gRPC service (`proto/admin.proto`) the CLI talks to. Protobuf stays here: domain types
//! are converted at this edge. Every refusal is a gRPC status with a message naming what is wrong.

use std::sync::Arc;

use hatrunk_core::trunk::{parse_trunk, Role, Trunk};
use tonic::{Request, Response, Status};

use crate::admission::Admission;
use crate::error::NodeError;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

pub mod pb {
    tonic::include_proto!("hatrunk.admin.v1");
}

use pb::admin_server::Admin;

/// Who this node is, for status replies.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub role: String,
    pub sip: String,
    pub cluster: String,
}

pub struct AdminService {
    pub store: Arc<dyn TrunkStore>,
    pub admission: Arc<dyn Admission>,
    pub status: Arc<SharedStatus>,
    pub me: Identity,
}

/// Largest trunk file accepted over the API.
const MAX_TRUNK_FILE: usize = 64 * 1024;

fn to_status(e: NodeError) -> Status {
    match e {
        NodeError::Trunk(e) => Status::invalid_argument(e.to_string()),
        NodeError::TrunkNotFound(id) => Status::not_found(format!("trunk {id} not found")),
        other => Status::internal(other.to_string()),
    }
}

impl AdminService {
    fn reply(&self, t: &Trunk) -> pb::TrunkReply {
        let mut state = serde_json::Map::new();
        for role in [Role::Primary, Role::Secondary] {
            if t.account(role).is_none() {
                continue;
            }
            let s = self.status.account(&t.id, role);
            let name = if role == Role::Primary { "primary" } else { "secondary" };
            state.insert(name.into(), serde_json::json!({ "health": s.health.state, "registered": s.registered }));
        }
        pb::TrunkReply { trunk_json: t.redacted().to_string(), state_json: serde_json::Value::Object(state).to_string() }
    }

    fn status_reply(&self) -> pb::ClusterStatusReply {
        let me = &self.me;
        pb::ClusterStatusReply {
            leader: me.id,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            initialized: true,
            members: vec![pb::Member {
                id: me.id,
                name: me.name.clone(),
                region: me.region.clone(),
                zone: me.zone.clone(),
                role: me.role.clone(),
                voter: true,
                leader: true,
                healthy: true,
                sip: me.sip.clone(),
                cluster: me.cluster.clone(),
            }],
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply_trunk(&self, req: Request<pb::ApplyTrunkRequest>) -> Result<Response<pb::TrunkReply>, Status> {
        let text = req.into_inner().toml;
        if text.len() > MAX_TRUNK_FILE {
            return Err(Status::invalid_argument(format!("trunk file larger than {MAX_TRUNK_FILE} bytes")));
        }
        let trunk = parse_trunk(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = trunk.id.clone();
        self.store.apply(trunk).await.map_err(to_status)?;
        tracing::info!(trunk = %id, "trunk applied");
        let t = self.store.get(&id).ok_or_else(|| Status::internal("trunk vanished after apply"))?;
        Ok(Response::new(self.reply(&t)))
    }

    async fn get_trunk(&self, req: Request<pb::TrunkId>) -> Result<Response<pb::TrunkReply>, Status> {
        let id = req.into_inner().id;
        let t = self.store.get(&id).ok_or_else(|| Status::not_found(format!("trunk {id} not found")))?;
        Ok(Response::new(self.reply(&t)))
    }

    async fn list_trunks(&self, _: Request<pb::Empty>) -> Result<Response<pb::TrunkList>, Status> {
        Ok(Response::new(pb::TrunkList { trunks: self.store.list().iter().map(|t| self.reply(t)).collect() }))
    }

    async fn delete_trunk(&self, req: Request<pb::TrunkId>) -> Result<Response<pb::Empty>, Status> {
        let id = req.into_inner().id;
        self.store.delete(id.clone()).await.map_err(to_status)?;
        tracing::info!(trunk = %id, "trunk deleted");
        Ok(Response::new(pb::Empty {}))
    }

    async fn calls(&self, req: Request<pb::CallsRequest>) -> Result<Response<pb::CallsReply>, Status> {
        let only = req.into_inner().trunk;
        if !only.is_empty() && self.store.get(&only).is_none() {
            return Err(Status::not_found(format!("trunk {only} not found")));
        }
        let usage: std::collections::HashMap<String, u32> = self.admission.usage().into_iter().collect();
        let pools = self
            .store
            .list()
            .iter()
            .filter(|t| only.is_empty() || t.id == only)
            .map(|t| pb::PoolUse {
                trunk: t.id.clone(),
                node: self.me.name.clone(),
                in_use: usage.get(&t.id).copied().unwrap_or(0),
                limit: t.max_concurrent_calls,
            })
            .collect();
        Ok(Response::new(pb::CallsReply { pools }))
    }

    async fn cluster_status(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        Ok(Response::new(self.status_reply()))
    }

    async fn cluster_init(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterStatusReply>, Status> {
        // A single node initialises itself on first start; init on it is a no-op that reports it.
        Ok(Response::new(self.status_reply()))
    }
}

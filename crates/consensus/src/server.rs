//! The node<->node gRPC service: Raft RPCs in, forwarded writes and reads served by the leader, and
//! identity for joins. Undecodable input gets `InvalidArgument` and changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::codec::{decode, encode};
use crate::pb::cluster_server::Cluster;
use crate::pb::Blob;
use crate::raft::{Consensus, Control, Read};
use crate::types::TypeConfig;

pub struct ClusterService {
    pub consensus: Arc<Consensus>,
    /// Whether this node reaches a majority of voters, as its failure detector last saw it.
    pub quorum: Arc<AtomicBool>,
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Blob>, Status> {
    encode(v).map(|data| Response::new(Blob { data })).map_err(|e| Status::internal(e.to_string()))
}

fn input<T: serde::de::DeserializeOwned>(r: Request<Blob>) -> Result<T, Status> {
    decode(&r.into_inner().data).map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = input(r)?;
        reply(&self.consensus.raft.append_entries(req).await)
    }

    async fn vote(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let req: VoteRequest<u64> = input(r)?;
        reply(&self.consensus.raft.vote(req).await)
    }

    async fn install_snapshot(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = input(r)?;
        reply(&self.consensus.raft.install_snapshot(req).await)
    }

    async fn write(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let req = input(r)?;
        reply(&self.consensus.write_local(req).await)
    }

    async fn read(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let q: Read = input(r)?;
        reply(&self.consensus.read_local(q).await)
    }

    async fn control(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let c: Control = input(r)?;
        reply(&self.consensus.control(c).await)
    }

    async fn ping(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let _from: u64 = input(r)?;
        reply(&(self.consensus.id, self.quorum.load(Ordering::Relaxed)))
    }

    async fn info(&self, _r: Request<Blob>) -> Result<Response<Blob>, Status> {
        let c = &self.consensus;
        reply(&(c.id, c.info.clone(), c.is_initialized().await))
    }
}

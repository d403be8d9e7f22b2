//! The Raft network over tonic (`proto/cluster.proto`): one lazily connected channel per peer, a
//! deadline on every RPC (openraft's TTL for the call), bincode payloads. Channels come from a
//! [`Dialer`], so the same code runs over TCP in production and over simulated sockets in turmoil.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::pb::cluster_client::ClusterClient;
use crate::pb::Blob;
use crate::types::{NodeInfo, TypeConfig};

type NodeId = u64;

/// Makes a lazily connecting channel to a cluster address (`host:port`).
pub type Dialer = Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// A channel to `addr` (`host:port`) over TCP that connects on first use, with a connect timeout.
pub fn channel(addr: &str) -> Result<Channel, String> {
    Ok(endpoint(addr)?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true).connect_lazy())
}

/// The endpoint for `addr`, for dialers that bring their own connector. HTTP/2 keepalive closes
/// a connection whose peer stopped answering (a half-open connection after a partition or a
/// middlebox dropping state), so the channel connects again instead of waiting on it forever.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true))
}

/// The production dialer with the cluster's mutual TLS: every channel presents this node's
/// certificate and accepts only a peer whose certificate chains to the cluster CA.
pub fn tls_dialer(tls: tonic::transport::ClientTlsConfig) -> Dialer {
    Arc::new(move |addr: &str| {
        let bare = addr.trim_start_matches("http://").trim_start_matches("https://");
        Ok(endpoint(&format!("https://{bare}"))?
            .tls_config(tls.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy())
    })
}

/// The production dialer without TLS: [`channel`] over TCP.
pub fn tcp_dialer() -> Dialer {
    Arc::new(channel)
}

pub struct Network {
    pub dialer: Dialer,
    /// Set by check-quorum ([`crate::quorum`]): this leader sends no AppendEntries (heartbeats or
    /// retried entries, which would keep every follower's leader lease alive) until it is deposed.
    pub mute: Arc<AtomicBool>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        Peer { target, client: (self.dialer)(&node.cluster_addr).ok().map(ClusterClient::new), mute: self.mute.clone() }
    }
}

pub struct Peer {
    target: NodeId,
    client: Option<ClusterClient<Channel>>,
    mute: Arc<AtomicBool>,
}

impl Peer {
    async fn call<Req, Resp, E>(&mut self, which: &'static str, req: &Req, ttl: Duration) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if which != "vote" && self.mute.load(Ordering::Acquire) {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other("muted: this leader hears no quorum"))));
        }
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other("bad peer address"))));
        };
        let data = crate::codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut r = tonic::Request::new(Blob { data });
        r.set_timeout(ttl);
        let reply = match which {
            "append" => client.append_entries(r).await,
            "vote" => client.vote(r).await,
            _ => client.install_snapshot(r).await,
        };
        let reply = reply.map_err(|s| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(s.message().to_string()))))?;
        let out: Result<Resp, E> = crate::codec::decode(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        out.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>> {
        self.call("snapshot", &rpc, option.hard_ttl().max(Duration::from_secs(5))).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}

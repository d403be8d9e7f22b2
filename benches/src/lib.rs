//! Benchmarks only; see `benches/` and the load scripts in this directory. Shared here: a 3-node
//! Raft cluster in one process (the production store on disk, gRPC on loopback).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hatrunk_consensus::disk::{DiskBackend, OsFs, StoreOptions};
use hatrunk_consensus::pb::cluster_server::ClusterServer;
use hatrunk_consensus::raft::{Consensus, RaftTiming};
use hatrunk_consensus::server::ClusterService;
use hatrunk_consensus::NodeInfo;

fn info(id: u64, port: u16) -> NodeInfo {
    NodeInfo {
        name: format!("n{id}"),
        region: "r".into(),
        zone: "z".into(),
        role: hatrunk_consensus::NodeRole::Sip,
        cluster_addr: format!("127.0.0.1:{port}"),
        sip_addr: String::new(),
    }
}

async fn node(id: u64, port: u16, dir: &Path) -> Result<Arc<Consensus>, String> {
    let backend = DiskBackend::open(OsFs, &dir.join(format!("n{id}")), StoreOptions::default()).map_err(|e| e.to_string())?;
    let c = Consensus::start(id, info(id, port), backend, &RaftTiming::default()).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let svc = ClusterService { consensus: c.clone(), quorum: Arc::new(true.into()) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(svc))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Ok(c)
}

/// Three members with stores under `dir`, on ports from near `base`; node 1 leads.
pub async fn cluster3(dir: &Path, base: u16) -> Result<Vec<Arc<Consensus>>, String> {
    let base = base + (std::process::id() % 100) as u16 * 3;
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        nodes.push(node(u64::from(i) + 1, base + i, dir).await?);
    }
    nodes[0].initialize().await.map_err(|e| e.to_string())?;
    for i in 1..3u16 {
        let id = u64::from(i) + 1;
        let mut tries = 0;
        while let Err(e) = nodes[0].add_node(id, info(id, base + i), false).await {
            tries += 1;
            if tries > 100 {
                return Err(format!("cannot add node {id}: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(nodes)
}

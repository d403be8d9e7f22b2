//! Admission through escrow shares on a real 3-node Raft cluster (the fdatasync'd Raft store on disk, gRPC on loopback),
//! all in this process so the figure is the node's own admission code and nothing else. Workers
//! are spread over the three nodes; each keeps `HOLD` calls in progress (admit a new one, release
//! the oldest), so shares grow during the ramp and are then used in place, as on a busy trunk.
//! Prints admissions/s (admit + release pairs), admit latency p50/p99/max, and how many Raft
//! writes the shares cost.
//!
//! usage: escrow-bench [WORKERS=64] [SECONDS=10] [HOLD=200] [LIMIT=100000]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hatrunk_consensus::disk::{DiskBackend, OsFs, StoreOptions};
use hatrunk_consensus::pb::cluster_server::ClusterServer;
use hatrunk_consensus::raft::{Consensus, RaftTiming};
use hatrunk_consensus::server::ClusterService;
use hatrunk_consensus::{Command, NodeInfo};
use hatrunk_node::admission::{Admission, EscrowAdmission, TIDY_EVERY};

const TRUNK: &str = "id = \"bench\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = LIMIT\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:9\"\nallowed_ips = [\"127.0.0.9/32\"]\n";

async fn node(id: u64, port: u16, dir: &std::path::Path) -> Result<Arc<Consensus>, String> {
    let info = NodeInfo {
        name: format!("n{id}"),
        region: "r".into(),
        zone: "z".into(),
        role: "sip".into(),
        cluster_addr: format!("127.0.0.1:{port}"),
        sip_addr: String::new(),
    };
    let backend = DiskBackend::open(OsFs, &dir.join(format!("n{id}")), StoreOptions::default()).map_err(|e| e.to_string())?;
    let c = Consensus::start(id, info, backend, &RaftTiming::default()).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let svc = ClusterService { consensus: c.clone(), quorum: Arc::new(true.into()) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(svc))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Ok(c)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (workers, secs, hold, limit) = (arg(1, 64) as usize, arg(2, 10), arg(3, 200) as usize, arg(4, 100_000));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let base = 47_700 + (std::process::id() % 100) as u16 * 3;
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        nodes.push(node(u64::from(i) + 1, base + i, dir.path()).await?);
    }
    nodes[0].initialize().await.map_err(|e| e.to_string())?;
    for i in 1..3u16 {
        let me = NodeInfo {
            name: format!("n{}", i + 1),
            region: "r".into(),
            zone: "z".into(),
            role: "sip".into(),
            cluster_addr: format!("127.0.0.1:{}", base + i),
            sip_addr: String::new(),
        };
        let mut tries = 0;
        while let Err(e) = nodes[0].add_node(u64::from(i) + 1, me.clone(), false).await {
            tries += 1;
            if tries > 100 {
                return Err(format!("cannot add node {}: {e}", i + 1));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let trunk = hatrunk_core::trunk::parse_trunk(&TRUNK.replace("LIMIT", &limit.to_string())).map_err(|e| e.to_string())?;
    nodes[0].write(Command::PutTrunk(Box::new(trunk))).await.map_err(|e| e.to_string())?;
    let writes_before = nodes[0].raft.metrics().borrow().last_log_index.unwrap_or(0);
    let adms: Vec<Arc<EscrowAdmission>> = nodes
        .iter()
        .enumerate()
        .map(|(i, c)| Arc::new(EscrowAdmission::new(c.clone(), format!("n{}", i + 1), hatrunk_node::runtime::wall_ms)))
        .collect();
    for a in &adms {
        a.reconcile().await.map_err(|e| e.to_string())?;
        let a = a.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TIDY_EVERY).await;
                a.tidy().await;
            }
        });
    }
    // every node sees the trunk before the clock starts
    while adms.len() != nodes.iter().filter(|c| c.local(|s| s.trunks.contains_key("bench"))).count() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let adm = adms[w % adms.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut n, mut pairs, mut full, mut lat) = (0u64, 0u64, 0u64, Vec::new());
            let mut held: VecDeque<String> = VecDeque::new();
            while Instant::now() < deadline {
                let call = format!("w{w}/{n}");
                n += 1;
                let t0 = Instant::now();
                let d = match adm.admit_now("bench", limit as u32, &call) {
                    Some(d) => d,
                    None => adm.admit("bench".into(), limit as u32, call.clone()).await.map_err(|e| e.to_string())?,
                };
                lat.push(t0.elapsed());
                if !d.admitted() {
                    full += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                held.push_back(call);
                if held.len() > hold {
                    let old = held.pop_front().unwrap_or_default();
                    adm.release(&old);
                    pairs += 1;
                }
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, String>((pairs, full, lat))
        }));
    }
    let (mut pairs, mut full, mut lat) = (0u64, 0u64, Vec::new());
    for t in tasks {
        let (p, f, l) = t.await.map_err(|e| e.to_string())??;
        pairs += p;
        full += f;
        lat.extend(l);
    }
    lat.sort();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default();
    let writes = nodes[0].raft.metrics().borrow().last_log_index.unwrap_or(0) - writes_before;
    let held: u32 = nodes[0].local(|s| s.shares.total("bench"));
    println!(
        "escrow: {workers} workers over 3 nodes, {hold} calls held each, limit {limit}, {secs}s: {} admissions/s, {full} refused, \
         admit latency p50 {:.1} us p99 {:.1} us max {:.1} ms, {writes} Raft entries ({:.4} per admission), shares at the end {held}",
        pairs / secs,
        q(0.5).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        q(1.0).as_secs_f64() * 1e3,
        writes as f64 / pairs.max(1) as f64,
    );
    println!("admissions_per_s={} p99_us={:.1}", pairs / secs, q(0.99).as_secs_f64() * 1e6);
    Ok(())
}

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

use hatrunk_consensus::Command;
use hatrunk_node::admission::{Admission, EscrowAdmission};

const TRUNK: &str = "id = \"bench\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = LIMIT\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:9\"\nallowed_ips = [\"127.0.0.9/32\"]\n";

#[tokio::main]
async fn main() -> Result<(), String> {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (workers, secs, hold, limit) = (arg(1, 64) as usize, arg(2, 10), arg(3, 200) as usize, arg(4, 100_000));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nodes = hatrunk_benches::cluster3(dir.path(), 47_700).await?;
    let trunk = hatrunk_core::trunk::parse_trunk(&TRUNK.replace("LIMIT", &limit.to_string())).map_err(|e| e.to_string())?;
    nodes[0].write(Command::PutTrunk(Box::new(trunk))).await.map_err(|e| e.to_string())?;
    let writes_before = nodes[0].raft.metrics().borrow().last_log_index.unwrap_or(0);
    let adms: Vec<Arc<EscrowAdmission>> =
        nodes.iter().enumerate().map(|(i, c)| Arc::new(EscrowAdmission::new(c.clone(), format!("n{}", i + 1), true))).collect();
    for a in &adms {
        a.reconcile().await.map_err(|e| e.to_string())?;
        tokio::spawn(a.clone().tidy_forever());
    }
    // every node sees the trunk before the clock starts
    while adms.len() != nodes.iter().filter(|c| c.local(|s| s.trunks.contains_key("bench"))).count() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let adm = adms[w % adms.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut n, mut pairs, mut full, mut lat) = (0u64, 0u64, 0u64, Vec::new());
            let mut refusals: Vec<(u64, u64, u32)> = Vec::new();
            let mut held: VecDeque<hatrunk_core::slot::SlotId> = VecDeque::new();
            while Instant::now() < deadline {
                let call = hatrunk_core::slot::SlotId::new(&format!("w{w}"), &n.to_string(), "b");
                n += 1;
                let t0 = Instant::now();
                let d = match adm.admit_now("bench", limit as u32, &call) {
                    Some(d) => d,
                    None => adm.admit("bench".into(), limit as u32, call.clone()).await.map_err(|e| e.to_string())?,
                };
                lat.push(t0.elapsed());
                if !d.admitted() {
                    full += 1;
                    if let hatrunk_core::pool::Decision::Full { used, .. } = d {
                        refusals.push(((t0 - start).as_millis() as u64, t0.elapsed().as_micros() as u64, used));
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                held.push_back(call);
                if held.len() > hold {
                    if let Some(old) = held.pop_front() {
                        adm.release(&old);
                        pairs += 1;
                    }
                }
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, String>((pairs, full, lat, refusals))
        }));
    }
    let (mut pairs, mut full, mut lat) = (0u64, 0u64, Vec::new());
    let mut refused: Vec<(u64, u64, u32)> = Vec::new();
    for t in tasks {
        let (p, f, l, r) = t.await.map_err(|e| e.to_string())??;
        refused.extend(r);
        pairs += p;
        full += f;
        lat.extend(l);
    }
    lat.sort();
    // when refusals came, how long they took and what the ledger held then: a refusal while the
    // ledger held less than the limit is one the pool had room for
    if let (Some(first), Some(last)) = (refused.iter().map(|r| r.0).min(), refused.iter().map(|r| r.0).max()) {
        let slowest = refused.iter().map(|r| r.1).max().unwrap_or(0);
        let held = refused.iter().map(|r| r.2).max().unwrap_or(0);
        println!(
            "refusals: {} between {first} and {last} ms into the run, the slowest after {:.1} ms, the ledger holding at most {held} of {limit}",
            refused.len(),
            slowest as f64 / 1e3
        );
    }
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

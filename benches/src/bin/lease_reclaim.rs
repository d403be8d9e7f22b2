//! How fast capacity stranded on a lost node comes back (issue 18), on a real 3-node Raft cluster
//! in this process (the fdatasync'd store on disk, gRPC on loopback). Each trial: node 3 admits 30
//! calls of a trunk (limit 64) and 20 of them end; then it is lost (its lease renewals stop, as when
//! it freezes or is cut off) and the clock runs until the leader's ledger has lapsed its lease and
//! cut its share to what its last renewal kept (its calls and one batch of headroom): from then on
//! nodes 1 and 2 can use the rest. Node 3's own surplus logic already keeps its reserve within about
//! a batch while it is busy, so what is cut is often small; the time is what the lease promises.
//! Then node 3 comes back (it hears its lease lapsed and shrinks) for the next trial. Also measured:
//! the Raft entries per second that lease renewals cost on an idle cluster.
//!
//! usage: lease-reclaim [TRIALS=20]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hatrunk_consensus::Command;
use hatrunk_core::slot::SlotId;
use hatrunk_node::admission::{Admission, EscrowAdmission};

const TRUNK: &str = "id = \"bench\"\nnumbers = [\"1000\"]\nmax_concurrent_calls = 64\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:9\"\nallowed_ips = [\"127.0.0.9/32\"]\n";

fn tidy(a: Arc<EscrowAdmission>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(a.tidy_forever())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let trials: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nodes = hatrunk_benches::cluster3(dir.path(), 47_800).await?;
    let trunk = hatrunk_core::trunk::parse_trunk(TRUNK).map_err(|e| e.to_string())?;
    nodes[0].write(Command::PutTrunk(Box::new(trunk))).await.map_err(|e| e.to_string())?;
    let adms: Vec<Arc<EscrowAdmission>> =
        nodes.iter().enumerate().map(|(i, c)| Arc::new(EscrowAdmission::new(c.clone(), format!("n{}", i + 1), true))).collect();
    let mut tidies = Vec::new();
    for a in &adms {
        a.reconcile().await.map_err(|e| e.to_string())?;
        tidies.push(tidy(a.clone()));
    }
    while nodes.iter().any(|c| !c.local(|s| s.trunks.contains_key("bench"))) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // what renewals cost: Raft entries per second with no calls at all
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idx = |c: &hatrunk_consensus::raft::Consensus| c.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let (i0, t0) = (idx(&nodes[0]), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let per_s = (idx(&nodes[0]) - i0) as f64 / t0.elapsed().as_secs_f64();
    println!("idle cluster: {per_s:.1} Raft entries/s for 3 SIP nodes ({:.2} per node per second)", per_s / 3.0);

    let n3 = adms[2].clone();
    let share = |c: &hatrunk_consensus::raft::Consensus| c.local(|s| s.shares.share("bench", "n3"));
    let lapsed = |c: &hatrunk_consensus::raft::Consensus| {
        c.local(|s| s.leases.get("n3").is_some_and(|r| r.state == hatrunk_consensus::lease::LeaseState::Lapsed))
    };
    let mut times = Vec::new();
    let mut call = 0u64;
    for trial in 0..trials {
        let mut up = Vec::new();
        for _ in 0..30 {
            call += 1;
            let id = SlotId::new("n3", &format!("c{call}"), "t");
            let d = match n3.admit_now("bench", 64, &id) {
                Some(d) => d,
                None => n3.admit("bench".into(), 64, id.clone()).await.map_err(|e| e.to_string())?,
            };
            if d.admitted() {
                up.push(id);
            }
        }
        for id in up.drain(10..) {
            n3.release(&id);
        }
        // let one renewal report the 10 calls in progress
        tokio::time::sleep(Duration::from_millis(600)).await;
        let before = share(&nodes[0]);
        tidies[2].abort();
        let lost = Instant::now();
        while !lapsed(&nodes[0]) {
            if lost.elapsed() > Duration::from_secs(15) {
                return Err(format!("trial {trial}: node 3's lease never lapsed"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = lost.elapsed();
        println!(
            "trial {trial:2}: node 3 held {before}, cut to {} ({} calls up) after {} ms",
            share(&nodes[0]),
            up.len(),
            took.as_millis()
        );
        times.push(took);
        for id in up.drain(..) {
            n3.release(&id);
        }
        tidies[2] = tidy(n3.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "stranded reserve usable elsewhere after losing a node: p50 {} ms, worst {} ms over {} trials (lease {} ms + margin {} ms)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len(),
        hatrunk_consensus::lease::LEASE_MS,
        hatrunk_consensus::lease::DRIFT_MARGIN_MS
    );
    Ok(())
}

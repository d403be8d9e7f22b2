//! The Raft store under replicated writes, on a real 3-node cluster in this process (the production
//! store on disk, gRPC on loopback).
//!
//! 1. Trunk-apply latency: `APPLIES` trunk writes one after another through the leader, p50/p99
//!    (what `hatrunk trunk apply` waits for, less the CLI's own start-up).
//! 2. Throughput and store size: `WRITERS` tasks write `COMMANDS` small commands (registrations, each
//!    replacing an earlier one, so the live state stays bounded as a busy cluster's does); prints
//!    commands/s, and the leader's store file against its live data at the end.
//!
//! usage: store-bench [APPLIES=500] [COMMANDS=100000] [WRITERS=64]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hatrunk_consensus::Command;

const TRUNK: &str = "id = \"ID\"\nnumbers = [\"NUM\"]\nmax_concurrent_calls = 10\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:9\"\nallowed_ips = [\"127.0.0.9/32\"]\n";

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (applies, commands, writers) = (arg(1, 500), arg(2, 100_000), arg(3, 64));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nodes = hatrunk_benches::cluster3(dir.path(), 47_400).await?;
    let leader = nodes[0].clone();
    let mut lat = Vec::new();
    for i in 0..applies {
        let text = TRUNK.replace("ID", &format!("t{i}")).replace("NUM", &format!("{}", 100_000 + i));
        let trunk = hatrunk_core::trunk::parse_trunk(&text).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        leader.write(Command::PutTrunk(Box::new(trunk))).await.map_err(|e| e.to_string())?;
        lat.push(t0.elapsed());
    }
    println!("trunk apply, {applies} in a row: p50 {:.2} ms, p99 {:.2} ms", pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (c, done) = (leader.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while done.fetch_add(1, Ordering::Relaxed) < commands {
                let cmd = Command::Register {
                    username: format!("w{w}-{}", i % 16),
                    contact: "sip:x".into(),
                    route: "udp:127.0.0.1:9".into(),
                    expires_ms: u64::MAX,
                };
                c.write(cmd).await.map_err(|e| e.to_string())?;
                i += 1;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{commands} commands by {writers} writers: {:.0} commands/s", commands as f64 / secs);
    // let the last snapshot and purge settle, then measure the leader's store on disk
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on_disk = dir_size(&dir.path().join("n1"));
    println!("leader's store after {} replicated commands: {:.1} MiB on disk", applies + commands, on_disk as f64 / 1048576.0);
    Ok(())
}

//! Admission throughput and latency of a running cluster: N concurrent workers each admit a slot
//! and release it, as fast as the leader commits them (each is one Raft command, exactly what a SIP
//! node does per call). Prints admissions/s (admit + release pairs), commands/s and the admit latency.
//!
//! usage: admission-bench CLUSTER_ADDR[,ADDR...] TRUNK [WORKERS=64] [SECONDS=10]

use std::time::{Duration, Instant};

use hatrunk_consensus::codec::{decode, encode};
use hatrunk_consensus::pb::cluster_client::ClusterClient;
use hatrunk_consensus::pb::Blob;
use hatrunk_consensus::{Command, CommandResult, Request};

type Client = ClusterClient<tonic::transport::Channel>;

async fn write(c: &mut Client, req: &Request) -> Result<CommandResult, String> {
    let data = encode(req).map_err(|e| e.to_string())?;
    let reply = c.write(tonic::Request::new(Blob { data })).await.map_err(|s| s.message().to_string())?;
    decode::<Result<CommandResult, String>>(&reply.into_inner().data).map_err(|e| e.to_string())?
}

/// The endpoint that accepts writes (the leader).
async fn leader(addrs: &[String]) -> Result<Client, String> {
    for a in addrs {
        let Ok(ch) = hatrunk_consensus::network::channel(a) else { continue };
        let mut c = ClusterClient::new(ch);
        let probe = Request { client: rand::random::<u64>() | 1, serial: 1, command: Command::Release { slot: "bench/probe".into() } };
        if write(&mut c, &probe).await.is_ok() {
            return Ok(c);
        }
    }
    Err("no endpoint accepted a write".into())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: admission-bench CLUSTER_ADDR[,ADDR...] TRUNK [WORKERS] [SECONDS]".into());
    }
    let addrs: Vec<String> = args[1].split(',').map(str::to_string).collect();
    let trunk = args[2].clone();
    let workers: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(64);
    let secs: u64 = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(10);
    let base = leader(&addrs).await?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = base.clone();
        let trunk = trunk.clone();
        tasks.push(tokio::spawn(async move {
            let client = rand::random::<u64>() | 1;
            let (mut serial, mut pairs, mut lat) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let slot = format!("bench/{w}/{serial}");
                serial += 1;
                let t0 = Instant::now();
                let r = write(&mut c, &Request { client, serial, command: Command::Admit { trunk: trunk.clone(), slot: slot.clone() } })
                    .await?;
                lat.push(t0.elapsed());
                if !matches!(r, CommandResult::Admission(a) if a.admitted()) {
                    return Err(format!("admission refused: {r:?}"));
                }
                serial += 1;
                write(&mut c, &Request { client, serial, command: Command::Release { slot } }).await?;
                pairs += 1;
            }
            Ok::<_, String>((pairs, lat))
        }));
    }
    let (mut pairs, mut lat) = (0u64, Vec::new());
    for t in tasks {
        let (p, l) = t.await.map_err(|e| e.to_string())??;
        pairs += p;
        lat.extend(l);
    }
    lat.sort();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
    };
    println!("workers={workers} seconds={secs}");
    println!("admissions_per_s={:.0} commands_per_s={:.0}", pairs as f64 / secs as f64, 2.0 * pairs as f64 / secs as f64);
    println!("admit_latency_ms p50={:.2} p99={:.2}", q(0.50), q(0.99));
    Ok(())
}

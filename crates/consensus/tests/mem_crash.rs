//! A Raft member on the in-memory backend survives a simulated crash: everything acknowledged
//! before the crash is there after a restart on the same "disk".

use hatrunk_consensus::backend::MemBackend;
use hatrunk_consensus::raft::{Consensus, RaftTiming};
use hatrunk_consensus::{Command, CommandResult, NodeInfo};

fn info() -> NodeInfo {
    NodeInfo { name: "sim1".into(), role: hatrunk_consensus::NodeRole::Sip, cluster_addr: "127.0.0.1:1".into(), ..NodeInfo::default() }
}

async fn leader(c: &Consensus) {
    for _ in 0..100 {
        if c.is_leader() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("single node never became leader");
}

#[tokio::test]
async fn acknowledged_writes_survive_a_simulated_crash() {
    let disk = MemBackend::default();
    let timing = RaftTiming { heartbeat_ms: 50, election_min_ms: 150, election_max_ms: 300, snapshot_every: 7 };
    let c = Consensus::start(1, info(), disk.clone(), &timing).await.expect("start");
    c.initialize().await.expect("init");
    leader(&c).await;
    for i in 0..20 {
        let r = c
            .write(Command::Register {
                username: format!("u{i}"),
                contact: "sip:x".into(),
                route: "udp:127.0.0.1:9".into(),
                expires_ms: u64::MAX,
            })
            .await
            .expect("write");
        assert_eq!(r, CommandResult::Ok);
    }
    c.raft.shutdown().await.expect("shutdown");
    drop(c);
    disk.crash();

    let c = Consensus::start(1, info(), disk.clone(), &timing).await.expect("restart");
    leader(&c).await;
    // a write after restart commits the re-elected leader's term and brings the state up to date
    c.write(Command::Release { slot: "none".into() }).await.expect("write after restart");
    let n = c.local(|s| s.registrations.len());
    assert_eq!(n, 20, "acknowledged registrations lost in the simulated crash");
}

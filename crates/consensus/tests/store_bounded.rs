//! The store's size stays bounded under a steady load: a simulated day (tokio's paused clock) of a
//! replicated command every 5 s on a single member over the production store on the memory disk.
//! Snapshots let the log be purged, and compaction gives the file back; without either the file
//! would grow with every command (17,280 of them, about 3 MiB of frames).

use std::path::Path;
use std::time::Duration;

use hatrunk_consensus::disk::crash::SimFs;
use hatrunk_consensus::disk::{DiskBackend, StoreOptions};
use hatrunk_consensus::raft::{Consensus, RaftTiming};
use hatrunk_consensus::{Command, CommandResult, NodeInfo};

#[tokio::test(start_paused = true)]
async fn a_simulated_day_of_commands_keeps_the_store_bounded() {
    let info =
        NodeInfo { name: "n1".into(), role: hatrunk_consensus::NodeRole::Sip, cluster_addr: "127.0.0.1:1".into(), ..NodeInfo::default() };
    // compaction at 256 KiB so a day exercises it many times; production's threshold is 16 MiB
    let opts = StoreOptions { compact_at_bytes: 256 * 1024, ..StoreOptions::default() };
    let store = DiskBackend::open(SimFs::default(), Path::new("/data/raft"), opts).expect("store");
    let timing = RaftTiming { heartbeat_ms: 50, election_min_ms: 150, election_max_ms: 300, snapshot_every: 1000 };
    let c = Consensus::start(1, info, store.clone(), &timing).await.expect("start");
    c.initialize().await.expect("init");
    while !c.is_leader() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut largest, mut written) = (0u64, 0u64);
    for i in 0..(24 * 3600 / 5) {
        // 200 PBXes re-registering in turn: the live state stays the same size, the log grows
        let cmd = Command::Register {
            username: format!("pbx{}", i % 200),
            contact: format!("sip:pbx@10.0.0.{}:5060", i % 200),
            route: "udp:10.0.0.1:5060".into(),
            expires_ms: 3_600_000 + i,
        };
        assert_eq!(c.write(cmd).await.expect("write"), CommandResult::Ok);
        let (file, _) = store.sizes();
        written += 1;
        largest = largest.max(file);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let (file, live) = store.sizes();
    println!("{written} commands over a simulated day: store file now {file} B (live data {live} B), largest {largest} B");
    assert!(largest < 1024 * 1024, "the store grew to {largest} B: compaction or purge is not keeping it bounded");
}

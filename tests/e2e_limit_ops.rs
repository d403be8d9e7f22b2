//! The limit through operator actions, on real processes (issue 18): a node carrying calls is
//! removed (drained, or killed first), or cut off for good; the PBX must never hold more calls than
//! the trunk's limit, counted from what it received (INVITEs in, BYEs in), not from our own view.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: u32 = 64;

/// The most dialogs the traced PBX held at once: an INVITE opens one (once per Call-ID), a BYE or
/// CANCEL received closes it.
fn pbx_peak(trace: &Path) -> usize {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let (mut open, mut closed) = (HashSet::new(), HashSet::new());
    let (mut now, mut peak) = (0usize, 0usize);
    let mut method: Option<&str> = None;
    for line in text.lines() {
        if let Some(m) = ["INVITE ", "BYE ", "CANCEL "].iter().find(|m| line.starts_with(*m)) {
            method = Some(m.trim());
        } else if line.is_empty() {
            method = None;
        } else if let (Some(m), Some(id)) = (method, line.strip_prefix("Call-ID:").or_else(|| line.strip_prefix("i:"))) {
            let id = id.trim();
            if m == "INVITE" && open.insert(id.to_string()) {
                now += 1;
                peak = peak.max(now);
            } else if m != "INVITE" && open.contains(id) && closed.insert(id.to_string()) {
                now -= 1;
            }
            method = None;
        }
    }
    peak
}

/// A carrier holding `n` calls through `via` for `hold_ms`, in the background (killed on drop):
/// its calls stay up at the PBX even when the node they went through dies.
struct Carrier(Child);

impl Carrier {
    fn start(via: &Node, port: u16, number: &str, n: u32, hold_ms: u32) -> Carrier {
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario("uac_rr.xml"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .arg(format!("127.0.0.1:{}", via.sip))
            .args(["-s", number, "-m", &n.to_string(), "-r", "100", "-l", &n.to_string(), "-d", &hold_ms.to_string(), "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        Carrier(child)
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three members and the shared trunk (limit 64) on a traced PBX.
fn cluster(base: u16) -> ([Node; 3], std::path::PathBuf, tempfile::TempDir, Sipp) {
    let nodes = [Node::member(base, 1, true), Node::member(base + 10, 2, false), Node::member(base + 20, 3, false)];
    join(&nodes[0], &nodes[1]);
    join(&nodes[0], &nodes[2]);
    let dir = tempfile::tempdir().expect("tmp");
    let trace = dir.path().join("pbx.log");
    let pbx = uas_traced(&scenario("uas_rr.xml"), base + 90, &trace);
    nodes[0].apply(&TrunkFile::new("ops", "3900", (base + 90, base + 91)).limit(LIMIT).mode("only-primary").toml());
    let t0 = Instant::now();
    while !nodes.iter().all(|n| n.has_trunk("ops")) {
        assert!(t0.elapsed() < Duration::from_secs(10), "trunk not replicated");
        std::thread::sleep(Duration::from_millis(100));
    }
    (nodes, trace, dir, pbx)
}

/// Wait until node 3 is quiet and return its part of the ledger: its part is steady (its spare
/// reserve given back, which it does a second after its last new call: then the part is its calls
/// in progress), then two more lease renewals (500 ms each) so its last report keeps no headroom.
/// A call admitted late on a loaded machine otherwise leaves headroom stranded with the node (by
/// design, docs/decisions.md), and the test would measure that instead of the calls. On a loaded
/// machine some of the carrier's 30 calls may also fail: the part says how many are up.
fn wait_quiet(via: &Node) -> u64 {
    let t0 = Instant::now();
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let out = via.cli(&["calls", "--trunk", "ops", "-o", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let part = rows.as_array().into_iter().flatten().find(|r| r["node"] == "n3").and_then(|r| r["in_use"].as_u64());
        if part != last {
            (last, since) = (part, Instant::now());
        } else if part.is_some() && since.elapsed() > Duration::from_millis(1500) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "node 3's part never settled: {part:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1100));
    last.unwrap_or(0)
}

/// Wait until the cluster counts at least `n` slots of the trunk held.
fn wait_held(via: &Node, n: u64) {
    let t0 = Instant::now();
    while via.in_use("ops") < n || via.in_use("ops") == u64::MAX {
        assert!(t0.elapsed() < Duration::from_secs(15), "only {} slots held, want {n}:\n{}", via.in_use("ops"), via.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn removing_a_live_node_drains_it_and_its_calls_keep_their_slots() {
    let (nodes, trace, _dir, pbx) = cluster(39000);
    let held = Carrier::start(&nodes[2], 39030, "3900", 30, 9000);
    wait_held(&nodes[0], 30);
    // `hatrunk calls`: the cluster's row first, then each node's part, which add up to it
    let n3 = wait_quiet(&nodes[0]);
    let out = nodes[0].cli(&["calls", "--trunk", "ops", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("calls -o json");
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.first().map(|r| r["node"].clone()), Some("cluster".into()), "{rows:?}");
    let parts: Vec<u64> = rows.iter().skip(1).map(|r| r["in_use"].as_u64().unwrap_or(0)).collect();
    assert_eq!(parts.iter().sum::<u64>(), rows[0]["in_use"].as_u64().unwrap_or(0), "{rows:?}");
    assert!(n3 >= 20, "node 3 holds its calls: {rows:?}");
    std::thread::scope(|s| {
        // the removal waits while node 3 drains
        let remove = s.spawn(|| nodes[0].cli(&["cluster", "remove", "3"]));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!remove.is_finished(), "node 3 still has 30 calls up: the removal waits");
        let (a, c) = {
            let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[0], 39031, "3900").calls(64).rate(100).hold_ms(3000).run());
            let c = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[2], 39032, "3900").calls(20).rate(100).hold_ms(3000).run());
            (a.join().expect("node 1 carrier"), c.join().expect("node 3 carrier"))
        };
        assert_eq!(c.ok, 0, "a draining node takes no new calls: {c:?}");
        assert!(a.ok > 0, "node 1 answered calls beside node 3's: {a:?}");
        let out = remove.join().expect("remove");
        assert!(out.status.success(), "removal after the drain: {}", String::from_utf8_lossy(&out.stderr));
    });
    // the removed node knows it (its next renewal is refused) and says so
    let removed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        nodes[2].http_get("/metrics").contains("hatrunk_admission_lease{state=\"removed\"} 1")
    });
    assert!(removed, "node 3's lease metric never said removed");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    drop(pbx);
    let peak = pbx_peak(&trace);
    eprintln!("the PBX held at most {peak} calls at once");
    assert!(peak <= LIMIT as usize, "the PBX held {peak} calls at once on a limit of {LIMIT}");
    assert!(peak >= 30, "the test put calls up ({peak})");
}

#[test]
fn removing_a_killed_node_keeps_its_calls_counted() {
    let (mut nodes, trace, _dir, pbx) = cluster(39100);
    let held = Carrier::start(&nodes[2], 39130, "3900", 30, 60_000);
    wait_held(&nodes[0], 30);
    // let node 3's last renewal report a quiet trunk (no headroom) before it dies
    wait_quiet(&nodes[0]);
    nodes[2].kill();
    let out = nodes[0].cli(&["cluster", "remove", "3"]);
    assert!(out.status.success(), "a dead node is removed without a drain: {}", String::from_utf8_lossy(&out.stderr));
    // offered for 3 s while every answered call stays up 5 s: refusals while shares move between
    // nodes 1 and 2 are retried by later offers, so the peak measures the usable limit, not a race
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[0], 39131, "3900").calls(120).rate(40).hold_ms(5000).run());
        let b = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[1], 39132, "3900").calls(30).rate(10).hold_ms(5000).run());
        (a.join().expect("a"), b.join().expect("b"))
    });
    drop(held);
    drop(pbx);
    let peak = pbx_peak(&trace);
    eprintln!("the PBX held at most {peak} calls at once");
    assert!(peak <= LIMIT as usize, "the PBX held {peak} calls at once on a limit of {LIMIT} ({a:?} + {b:?} answered)");
    assert!(peak + 4 >= LIMIT as usize, "beside node 3's 30 calls the rest of the limit is usable: peak {peak}");
}

#[test]
fn a_node_frozen_for_good_strands_only_its_calls() {
    let (nodes, trace, _dir, pbx) = cluster(39200);
    let held = Carrier::start(&nodes[2], 39230, "3900", 30, 60_000);
    wait_held(&nodes[0], 30);
    wait_quiet(&nodes[0]);
    nodes[2].signal("STOP");
    let stopped = Instant::now();
    // once the leader lapses node 3's lease (7.7 s after its last renewal) and 3 s more, the
    // others admit up to the limit less node 3's calls
    let t0 = Instant::now();
    loop {
        let held_now = nodes[0].in_use("ops");
        if held_now <= 30 + 4 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_millis(10_700), "node 3's reserve never came back ({held_now} held)");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reclaimed = stopped.elapsed();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[0], 39231, "3900").calls(75).rate(25).hold_ms(5000).run());
        let b = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &nodes[1], 39232, "3900").calls(75).rate(25).hold_ms(5000).run());
        (a.join().expect("a"), b.join().expect("b"))
    });
    nodes[2].signal("CONT");
    drop(held);
    drop(pbx);
    let peak = pbx_peak(&trace);
    eprintln!("the PBX held at most {peak} calls at once");
    assert!(peak <= LIMIT as usize, "the PBX held {peak} calls at once on a limit of {LIMIT} ({a:?} + {b:?} answered)");
    assert!(peak + 4 >= LIMIT as usize, "{reclaimed:?} after the freeze the rest of the limit is usable: peak {peak}");
}

//! Advanced HA end to end: real clusters on loopback (2T, 4T, 2T+4T, each with its witness), a SIPp
//! carrier calling one node and a SIPp PBX that logs whose Via reached it; nodes killed with
//! `kill -9` and hung with `kill -STOP`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Spec {
    base: u16,
    id: u64,
    region: &'static str,
    zone: &'static str,
    witness: bool,
}

fn start(s: &Spec, bootstrap: bool) -> Node {
    let role = if s.witness { "witness" } else { "sip" };
    Node::start_full(
        s.base,
        &format!("id = {}\nname = \"n{}\"\nregion = \"{}\"\nzone = \"{}\"\nrole = \"{role}\"", s.id, s.id, s.region, s.zone),
        "",
        &format!("bootstrap = {bootstrap}\nheartbeat_ms = 100\nelection_min_ms = 800\nelection_max_ms = 1600"),
        "",
    )
}

/// Start every node, join them all through the first, and wait until the first sees all healthy.
fn cluster(specs: &[Spec]) -> Vec<Node> {
    let nodes: Vec<Node> = specs.iter().enumerate().map(|(i, s)| start(s, i == 0)).collect();
    for n in &nodes[1..] {
        let out = nodes[0].cli(&["cluster", "join", &format!("127.0.0.1:{}", n.admin)]);
        assert!(out.status.success(), "join failed: {}\n{}", String::from_utf8_lossy(&out.stderr), nodes[0].log());
    }
    let all: Vec<u64> = specs.iter().map(|s| s.id).collect();
    wait_health(&nodes[0], &all, true);
    nodes
}

/// `members -o json` through `via`: id -> healthy.
fn health(via: &Node) -> BTreeMap<u64, bool> {
    let out = via.cli(&["cluster", "members", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array().into_iter().flatten().map(|m| (m["id"].as_u64().unwrap_or(0), m["healthy"] == true)).collect()
}

/// Wait until `via` reports every node of `ids` healthy (or every one down); returns how long it took.
fn wait_health(via: &Node, ids: &[u64], healthy: bool) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = health(via);
        if ids.iter().all(|id| h.get(id) == Some(&healthy)) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "nodes {ids:?} not healthy={healthy} after 20 s: {h:?}\n{}", via.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ha_trunk(number: &str, level: &str, pbx: u16, extra: &str) -> String {
    TrunkFile::new(&format!("ha{number}"), number, (pbx, pbx + 1))
        .limit(200)
        .mode("only-primary")
        .with(&format!("advanced_ha = \"{level}\"\n{extra}"))
        .toml()
}

/// Place `n` calls into `via` and return the PBX-side Via ports of the INVITEs they produced, with a
/// fresh traced PBX on `pbx` (so each phase counts only its own calls).
fn phase(via: &Node, pbx: u16, carrier: u16, number: &str, n: u32, dir: &Path, tag: &str) -> (Calls, Vec<u16>) {
    let trace = dir.join(format!("pbx-{tag}.log"));
    let p = uas_traced(&scenario("uas_rr.xml"), pbx, &trace);
    let calls = Uac::new(&scenario("uac_rr.xml"), via, carrier, number).calls(n).rate(20).run();
    std::thread::sleep(Duration::from_millis(300));
    drop(p);
    let ports = invite_via_ports(&trace);
    if ports.len() as u64 != calls.ok + calls.failed || calls.failed > 0 {
        // what the entry node made of each call, so a failure explains itself
        let cdrs: String = via.cdrs().iter().map(|c| format!("{c}\n")).collect();
        eprintln!("phase {tag}: {calls:?}, {} INVITEs at the PBX; the entry node's CDRs:\n{cdrs}", ports.len());
        let _ = std::fs::copy(&trace, format!("/tmp/ha-debug-{tag}.log"));
        let _ = std::fs::write(format!("/tmp/ha-debug-{tag}-node.log"), via.log());
    }
    (calls, ports)
}

fn count_in(ports: &[u16], of: &[&Node]) -> usize {
    ports.iter().filter(|p| of.iter().any(|n| n.sip == **p)).count()
}

/// A 2T cluster of one node per zone and a witness, with a 2T trunk for `number` and its PBX port.
fn two_zones(base: u16, number: &str) -> (Vec<Node>, tempfile::TempDir, u16) {
    let specs = vec![
        Spec { base, id: 1, region: "r1", zone: "zone-a", witness: false },
        Spec { base: base + 10, id: 2, region: "r1", zone: "zone-b", witness: false },
        Spec { base: base + 20, id: 3, region: "r1", zone: "zone-c", witness: true },
    ];
    let nodes = cluster(&specs);
    let pbx = base + 100;
    nodes[0].apply(&ha_trunk(number, "2t", pbx, ""));
    (nodes, tempfile::tempdir().expect("tmp"), pbx)
}

fn two_t_specs(base: u16) -> Vec<Spec> {
    vec![
        Spec { base, id: 1, region: "r1", zone: "zone-a", witness: false },
        Spec { base: base + 10, id: 2, region: "r1", zone: "zone-a", witness: false },
        Spec { base: base + 20, id: 3, region: "r1", zone: "zone-b", witness: false },
        Spec { base: base + 30, id: 4, region: "r1", zone: "zone-b", witness: false },
        Spec { base: base + 40, id: 5, region: "r1", zone: "zone-c", witness: true },
    ]
}

#[test]
fn two_t_round_robin_survives_a_zone_and_resumes() {
    let base = 38000;
    let mut nodes = cluster(&two_t_specs(base));
    let dir = tempfile::tempdir().expect("tmp");
    let pbx = base + 100;
    nodes[0].apply(&ha_trunk("3800", "2t", pbx, ""));

    // 100 calls into n1 leave evenly from both zones, each node with its own Via
    let (c, ports) = phase(&nodes[0], pbx, base + 90, "3800", 100, dir.path(), "even");
    assert_eq!(c, Calls { ok: 100, failed: 0 });
    assert_eq!(ports.len(), 100, "{ports:?}");
    let (a, b) = (count_in(&ports, &[&nodes[0], &nodes[1]]), count_in(&ports, &[&nodes[2], &nodes[3]]));
    assert_eq!((a, b), (50, 50), "zone a / zone b: {ports:?}");
    assert!(count_in(&ports, &[&nodes[2]]) > 0 && count_in(&ports, &[&nodes[3]]) > 0, "both zone-b nodes take calls");

    // calls in progress through zone a are untouched by the loss of zone b: their BYE works
    let trace = dir.path().join("pbx-long.log");
    let p = uas_traced(&scenario("uas_rr.xml"), pbx, &trace);
    let (zone_a, zone_b) = nodes.split_at_mut(2);
    let (through_a, killed, detected) = std::thread::scope(|s| {
        let entry = &zone_a[0];
        let h = s.spawn(move || Uac::new(&scenario("uac_rr.xml"), entry, base + 91, "3800").calls(10).rate(20).hold_ms(4000).run());
        std::thread::sleep(Duration::from_millis(1500)); // all 10 answered and held
        zone_b[0].kill();
        zone_b[1].kill();
        let killed = Instant::now();
        let detected = wait_health(entry, &[3, 4], false);
        (h.join().expect("long calls"), killed, detected)
    });
    drop(p);
    assert_eq!(through_a.ok, 5, "the 5 calls held through zone a end normally: {through_a:?}");

    // 2.5 s after the kill, every new call is answered and leaves from zone a
    let wait = Duration::from_millis(2500).saturating_sub(killed.elapsed());
    std::thread::sleep(wait);
    let (c, ports) = phase(&nodes[0], pbx, base + 92, "3800", 40, dir.path(), "zone-a-only");
    assert_eq!(c, Calls { ok: 40, failed: 0 }, "detected after {detected:?}");
    assert_eq!(count_in(&ports, &[&nodes[0], &nodes[1]]), 40, "{ports:?}");

    // zone b back: round-robin resumes
    let n4 = nodes.remove(3).restart();
    let n3 = nodes.remove(2).restart();
    nodes.insert(2, n3);
    nodes.insert(3, n4);
    wait_health(&nodes[0], &[3, 4], true);
    let (c, ports) = phase(&nodes[0], pbx, base + 93, "3800", 20, dir.path(), "resumed");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[2], &nodes[3]]), 10, "{ports:?}");
    assert_eq!(nodes[0].settled_in_use("ha3800", 0), 0, "no slot leaked");
}

#[test]
fn hung_node_is_down_within_detection_and_back_on_cont() {
    let base = 38200;
    let (nodes, dir, pbx) = two_zones(base, "3820");
    nodes[1].signal("STOP");
    let stopped = Instant::now();
    wait_health(&nodes[0], &[2], false);
    let detection = stopped.elapsed();
    // the detector's default threshold is 800 ms with a heartbeat each 200 ms; allow the CLI's own time
    assert!(detection < Duration::from_millis(2500), "hung node seen down after {detection:?}");
    std::thread::sleep(Duration::from_millis(2500u64.saturating_sub(detection.as_millis() as u64)));
    // what the alert rules read (cluster-configs/observability): one member down, a leader known
    let down = |m: &str| m.lines().filter(|l| l.starts_with("hatrunk_member_up{") && l.ends_with(" 0")).count();
    let m = nodes[0].http_get("/metrics");
    assert_eq!(down(&m), 1, "{m}");
    assert!(m.contains("hatrunk_cluster_leader_known 1"), "{m}");
    let (c, ports) = phase(&nodes[0], pbx, base + 90, "3820", 10, dir.path(), "hung");
    assert_eq!(c, Calls { ok: 10, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[0]]), 10, "nothing to the hung zone: {ports:?}");
    nodes[1].signal("CONT");
    wait_health(&nodes[0], &[2], true);
    assert_eq!(down(&nodes[0].http_get("/metrics")), 0);
    let (c, ports) = phase(&nodes[0], pbx, base + 91, "3820", 10, dir.path(), "back");
    assert_eq!(c, Calls { ok: 10, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[1]]), 5, "{ports:?}");
}

#[test]
fn four_t_primary_region_then_secondary_and_back() {
    let base = 38400;
    let specs = vec![
        Spec { base, id: 1, region: "region-1", zone: "r1-a", witness: false },
        Spec { base: base + 10, id: 2, region: "region-1", zone: "r1-a", witness: false },
        Spec { base: base + 20, id: 3, region: "region-2", zone: "r2-a", witness: false },
        Spec { base: base + 30, id: 4, region: "region-2", zone: "r2-a", witness: false },
        Spec { base: base + 40, id: 5, region: "region-3", zone: "r3-a", witness: true },
    ];
    let mut nodes = cluster(&specs);
    let dir = tempfile::tempdir().expect("tmp");
    let pbx = base + 100;
    nodes[2].apply(&ha_trunk("3840", "4t", pbx, "primary_region = \"region-1\""));
    // calls entering a region-2 node leave from region 1
    let (c, ports) = phase(&nodes[2], pbx, base + 90, "3840", 20, dir.path(), "r1");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[0], &nodes[1]]), 20, "{ports:?}");

    // kill region 1, the leader (n1, the bootstrap node) included
    nodes[0].kill();
    nodes[1].kill();
    let t0 = Instant::now();
    loop {
        let out = nodes[2].cli(&["cluster", "status", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let leader = v["leader"].as_u64().unwrap_or(0);
        if out.status.success() && leader >= 3 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no new leader: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let (c, ports) = phase(&nodes[2], pbx, base + 91, "3840", 20, dir.path(), "r2");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[2], &nodes[3]]), 20, "{ports:?}");

    // region 1 restored: calls return to it
    let n2 = nodes.remove(1).restart();
    let n1 = nodes.remove(0).restart();
    nodes.insert(0, n1);
    nodes.insert(1, n2);
    wait_health(&nodes[2], &[1, 2], true);
    let (c, ports) = phase(&nodes[2], pbx, base + 92, "3840", 20, dir.path(), "r1-again");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[0], &nodes[1]]), 20, "{ports:?}");
}

#[test]
fn two_t_four_t_zone_then_region() {
    let base = 38600;
    let mut specs = Vec::new();
    let zones = [("region-1", "r1-a"), ("region-1", "r1-b"), ("region-2", "r2-a"), ("region-2", "r2-b")];
    for (i, (region, zone)) in zones.iter().enumerate() {
        for k in 0..2u16 {
            let idx = i as u16 * 2 + k;
            specs.push(Spec { base: base + idx * 10, id: u64::from(idx) + 1, region, zone, witness: false });
        }
    }
    specs.push(Spec { base: base + 80, id: 9, region: "region-3", zone: "r3-a", witness: true });
    let mut nodes = cluster(&specs);
    let dir = tempfile::tempdir().expect("tmp");
    let pbx = base + 100;
    let entry = 4; // n5, in region 2
    nodes[entry].apply(&ha_trunk("3860", "2t+4t", pbx, "primary_region = \"region-1\""));
    let (c, ports) = phase(&nodes[entry], pbx, base + 90, "3860", 20, dir.path(), "all");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[0], &nodes[1]]), 10, "zone r1-a: {ports:?}");
    assert_eq!(count_in(&ports, &[&nodes[2], &nodes[3]]), 10, "zone r1-b: {ports:?}");

    // one zone of region 1 lost: the other zone of region 1 takes everything
    nodes[0].kill();
    nodes[1].kill();
    wait_health(&nodes[entry], &[1, 2], false);
    std::thread::sleep(Duration::from_millis(2500));
    let (c, ports) = phase(&nodes[entry], pbx, base + 91, "3860", 20, dir.path(), "r1-b");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[2], &nodes[3]]), 20, "{ports:?}");

    // both zones of region 1 lost: region 2, both its zones
    nodes[2].kill();
    nodes[3].kill();
    wait_health(&nodes[entry], &[3, 4], false);
    std::thread::sleep(Duration::from_millis(2500));
    let (c, ports) = phase(&nodes[entry], pbx, base + 92, "3860", 20, dir.path(), "r2");
    assert_eq!(c, Calls { ok: 20, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[4], &nodes[5]]), 10, "zone r2-a: {ports:?}");
    assert_eq!(count_in(&ports, &[&nodes[6], &nodes[7]]), 10, "zone r2-b: {ports:?}");
}

/// A drop rule (nftables, on loopback) for SIP between two ports, both ways; removed when dropped.
struct SipBlock(String);

impl SipBlock {
    fn between(a: u16, b: u16, table: &str) -> SipBlock {
        let nft = |args: &str| {
            let out =
                std::process::Command::new("nft").args(args.split(' ')).output().expect("run nft (the test command installs nftables)");
            assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = std::process::Command::new("nft").args(["delete", "table", "inet", table]).output();
        nft(&format!("add table inet {table}"));
        nft(&format!("add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}"));
        nft(&format!("add rule inet {table} out udp sport {a} udp dport {b} drop"));
        nft(&format!("add rule inet {table} out udp sport {b} udp dport {a} drop"));
        SipBlock(table.to_string())
    }
}

impl Drop for SipBlock {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "inet", &self.0]).output();
    }
}

/// SIP between two members blocked while their cluster gRPC works (a firewall rule on the SIP port):
/// the member is down for calls from the first answered OPTIONS it misses, so nothing is forwarded
/// to it to wait out the forward timer, and it is back once its SIP answers again.
#[test]
fn a_member_whose_sip_is_blocked_is_down_while_its_heartbeat_answers() {
    let base = 37800;
    let (nodes, dir, pbx) = two_zones(base, "3780");
    let block = SipBlock::between(nodes[0].sip, nodes[1].sip, "hatrunk_e2e_sip_block");
    wait_health(&nodes[0], &[2], false);
    let said = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        nodes[0].log().contains("SIP does not answer while its cluster heartbeat does")
    });
    assert!(said, "node 1 logs why: {}", nodes[0].log());
    let status = nodes[0].cli(&["cluster", "status"]);
    assert!(status.status.success(), "the cluster itself is fine: {}", String::from_utf8_lossy(&status.stderr));
    let before = nodes[0].http_get("/metrics");
    let (c, ports) = phase(&nodes[0], pbx, base + 90, "3780", 10, dir.path(), "sip-blocked");
    assert_eq!(c, Calls { ok: 10, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[0]]), 10, "nothing to the member whose SIP is blocked: {ports:?}");
    let moves = |m: &str| m.lines().filter(|l| l.starts_with("hatrunk_egress_moves_total")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(moves(&before), moves(&nodes[0].http_get("/metrics")), "no call waited on it and moved");
    drop(block);
    wait_health(&nodes[0], &[2], true);
    let (c, ports) = phase(&nodes[0], pbx, base + 91, "3780", 10, dir.path(), "sip-back");
    assert_eq!(c, Calls { ok: 10, failed: 0 });
    assert_eq!(count_in(&ports, &[&nodes[1]]), 5, "{ports:?}");
}

//! The Raft group end to end: real `hatrunk` processes on loopback forming a cluster with the CLI,
//! losing and regaining nodes, and one call pool shared by all of them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "cli failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The members as `cluster members -o json` shows them through `via`.
fn members(via: &Node) -> Vec<Value> {
    json(&via.cli(&["cluster", "members", "-o", "json"])).as_array().cloned().unwrap_or_default()
}

/// Wait until `via` reports a leader other than `not`, returning its id.
fn wait_leader(via: &Node, not: Option<u64>) -> u64 {
    let t0 = Instant::now();
    loop {
        let out = via.cli(&["cluster", "status", "-o", "json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let leader = v["leader"].as_u64().unwrap_or(0);
            if leader != 0 && Some(leader) != not {
                return leader;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no new leader after 15 s:\n{}", via.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn trunk_file(id: &str, number: &str, limit: u32, pbx: u16) -> String {
    TrunkFile::new(id, number, (pbx, pbx + 1)).limit(limit).mode("only-primary").toml()
}

#[test]
fn three_nodes_form_a_cluster_survive_the_leader_and_remove_a_member() {
    let mut nodes = vec![Node::member(36000, 1, true), Node::member(36010, 2, false), Node::member(36020, 3, false)];
    join(&nodes[0], &nodes[1]);
    join(&nodes[1], &nodes[2]); // any member serves the verb: a follower forwards it to the leader
                                // healthy = answering the failure detector's heartbeats: a node just joined is heard within ~1 s
    let t0 = Instant::now();
    let m = loop {
        let m = members(&nodes[2]);
        if m.len() == 3 && m.iter().all(|x| x["voter"] == true && x["healthy"] == true) {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{m:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(m.len(), 3, "{m:?}");

    // a trunk applied through one node is read through another (linearizable get)
    nodes[1].apply(&trunk_file("a", "3600", 5, 36100));
    // the follower it went through has applied it by the time the CLI returns: its list, read
    // from its own state as routing reads it, has the trunk at once (calls sent to it at once got
    // 404 while it lagged the leader by a heartbeat)
    let listed = json(&nodes[1].cli(&["trunk", "list", "-o", "json"]));
    assert!(listed.as_array().is_some_and(|a| a.iter().any(|t| t["id"] == "a")), "{listed}");
    assert!(nodes[2].has_trunk("a"));
    assert!(nodes[0].has_trunk("a"));

    // kill -9 the leader: a new one within a few seconds, and writes go on
    let leader = wait_leader(&nodes[0], None);
    let dead = (leader - 1) as usize;
    nodes[dead].kill();
    let survivor = (dead + 1) % 3;
    let t0 = Instant::now();
    let new_leader = wait_leader(&nodes[survivor], Some(leader));
    assert_ne!(new_leader, leader);
    assert!(t0.elapsed() < Duration::from_secs(10), "election took {:?}", t0.elapsed());
    nodes[survivor].apply(&trunk_file("b", "3601", 5, 36100));
    // the survivor says so in its log, once, in an operator's words (dependencies log at WARN)
    let said = |l: &str| {
        [
            "cluster leader changed",
            &format!("member down: calls go to the others member=n{leader}"),
            &format!("zone down: none of its members answers zone=z{leader}"),
        ]
        .iter()
        .all(|w| l.contains(w))
    };
    let t0 = Instant::now();
    while !said(&nodes[survivor].log()) {
        assert!(t0.elapsed() < Duration::from_secs(5), "the survivor's log:\n{}", nodes[survivor].log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // the killed node restarts from its disk and catches up
    let restarted = nodes.remove(dead).restart();
    let t0 = Instant::now();
    while !restarted.cli(&["trunk", "list", "-o", "json"]).stdout.windows(3).any(|w| w == b"\"b\"") {
        assert!(t0.elapsed() < Duration::from_secs(15), "restarted node did not catch up:\n{}", restarted.log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // cluster remove of another node, asked through the restarted one: the rest go on
    let victim = if leader == 1 { 2 } else { 1 };
    let out = restarted.cli(&["cluster", "remove", &victim.to_string()]);
    assert!(
        out.status.success(),
        "remove failed: {}\nvia (restarted):\n{}\nothers:\n{}",
        String::from_utf8_lossy(&out.stderr),
        restarted.log(),
        nodes.iter().map(|n| n.log()).collect::<Vec<_>>().join("\n----\n")
    );
    assert_eq!(members(&restarted).len(), 2);
    restarted.apply(&trunk_file("c", "3602", 5, 36100));
    assert!(restarted.has_trunk("c"));
}

#[test]
fn bad_membership_requests_are_refused_and_change_nothing() {
    let n1 = Node::member(36200, 1, true);
    let n2 = Node::member(36210, 2, false);
    wait_leader(&n1, None);
    // an address that is not a hatrunk node (the HTTP port)
    let out = n1.cli(&["cluster", "join", &format!("127.0.0.1:{}", n1.admin + 1)]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not answer as a hatrunk node"));
    // an unknown id, the last voter
    let out = n1.cli(&["cluster", "remove", "42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
    let out = n1.cli(&["cluster", "remove", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last voter"));
    assert_eq!(members(&n1).len(), 1);
    // a trunk file that fails validation, sent to a follower
    join(&n1, &n2);
    let out = n2.try_apply(&trunk_file("bad", "3620", 5, 36100).replace("only-primary", "sometimes"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode"));
    assert!(json(&n1.cli(&["trunk", "list", "-o", "json"])).as_array().is_some_and(|a| a.is_empty()));
}

#[test]
fn one_limit_across_two_nodes() {
    let n1 = Node::member(36300, 1, true);
    let n2 = Node::member(36310, 2, false);
    let n3 = Node::member(36320, 3, false);
    join(&n1, &n2);
    join(&n1, &n3);
    let _pbx = uas(&scenario("uas_rr.xml"), 36390, false);
    n1.apply(&trunk_file("shared", "3630", 20, 36390));
    let t0 = Instant::now();
    while !n2.cli(&["trunk", "list", "-o", "json"]).stdout.windows(8).any(|w| w == b"\"shared\"") {
        assert!(t0.elapsed() < Duration::from_secs(10), "trunk not replicated");
        std::thread::sleep(Duration::from_millis(100));
    }
    // 20 long calls through each of two nodes at once: exactly 20 answered in all
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n1, 36330, "3630").calls(20).rate(100).hold_ms(4000).run());
        let b = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n2, 36331, "3630").calls(20).rate(100).hold_ms(4000).run());
        (a.join().expect("a"), b.join().expect("b"))
    });
    if a.ok + b.ok != 20 {
        let why = |n: &Node| {
            n.cdrs()
                .iter()
                .map(|c| format!("{} {} {} {} {}\n", c["start_ms"], c["end_ms"], c["disposition"], c["cause"], c["final_code"]))
                .collect::<String>()
        };
        std::thread::sleep(Duration::from_millis(300));
        panic!("answered {a:?} + {b:?}\nn1 cdrs:\n{}\nn2 cdrs:\n{}\nn1 log:\n{}\nn2 log:\n{}", why(&n1), why(&n2), n1.log(), n2.log());
    }
    assert_eq!(a.failed + b.failed, 20);
    // when they end, every slot is back, as any node sees it
    let t0 = Instant::now();
    while n3.in_use("shared") != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "slots leaked: {}", n3.in_use("shared"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_limit_holds_and_nothing_leaks_when_the_leader_dies_mid_call() {
    let nodes = [Node::member(36400, 1, true), Node::member(36410, 2, false)];
    let mut third = Node::member(36420, 3, false);
    join(&nodes[0], &nodes[1]);
    join(&nodes[0], &third);
    // make node 3 the leader; calls enter through nodes 1 and 2
    let out = nodes[0].cli(&["cluster", "transfer-leader", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t0 = Instant::now();
    while wait_leader(&nodes[0], None) != 3 {
        assert!(t0.elapsed() < Duration::from_secs(10), "node 3 never became leader");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _pbx = uas(&scenario("uas_rr.xml"), 36490, false);
    nodes[0].apply(&trunk_file("mid", "3640", 20, 36490));
    std::thread::sleep(Duration::from_millis(500));
    let (a, b) = std::thread::scope(|s| {
        let (n1, n2) = (&nodes[0], &nodes[1]);
        let a = s.spawn(move || Uac::new(&scenario("uac_rr.xml"), n1, 36430, "3640").calls(20).rate(100).hold_ms(6000).run());
        let b = s.spawn(move || Uac::new(&scenario("uac_rr.xml"), n2, 36431, "3640").calls(20).rate(100).hold_ms(6000).run());
        std::thread::sleep(Duration::from_secs(2));
        third.kill();
        (a.join().expect("a"), b.join().expect("b"))
    });
    assert!(a.ok + b.ok <= 20, "over-admitted: {a:?} + {b:?}");
    assert!(a.ok + b.ok > 0, "nothing answered: {a:?} + {b:?}");
    let t0 = Instant::now();
    while nodes[0].in_use("mid") != 0 {
        assert!(t0.elapsed() < Duration::from_secs(15), "slots leaked: {}\n{}", nodes[0].in_use("mid"), nodes[0].log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn five_nodes_survive_two_losses_with_a_witness_voting() {
    let mut nodes: Vec<Node> = (1..=4u64).map(|id| Node::member(36500 + 10 * id as u16, id, id == 1)).collect();
    let witness = Node::start_full(
        36560,
        "id = 5\nname = \"w5\"\nrole = \"witness\"",
        "",
        "bootstrap = false\nheartbeat_ms = 100\nelection_min_ms = 800\nelection_max_ms = 1600",
        "",
    );
    for n in nodes.iter().skip(1) {
        join(&nodes[0], n);
    }
    join(&nodes[0], &witness);
    // the join is acknowledged once the leader committed it; the witness hears of it after
    let t0 = Instant::now();
    let m = loop {
        let m = members(&witness);
        if m.iter().filter(|x| x["voter"] == true).count() == 5 || t0.elapsed() > Duration::from_secs(10) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(m.iter().filter(|x| x["voter"] == true).count(), 5, "{m:?}");
    assert!(m.iter().any(|x| x["role"] == "witness" && x["sip"] == ""), "{m:?}");
    // the witness runs no SIP: nothing listens on its SIP port
    assert!(std::net::TcpStream::connect(("127.0.0.1", 36560)).is_err());
    nodes[0].apply(&trunk_file("five", "3650", 5, 36590));
    let leader = wait_leader(&witness, None);
    // lose the leader and one more node: three of five remain, a majority
    let mut lost = vec![leader];
    if leader != 5 {
        nodes[(leader - 1) as usize].kill();
    }
    let other = (1..=4u64).find(|id| *id != leader).expect("another node");
    nodes[(other - 1) as usize].kill();
    lost.push(other);
    let via = (1..=4u64).find(|id| !lost.contains(id)).expect("a survivor");
    let via = &nodes[(via - 1) as usize];
    wait_leader(via, Some(leader));
    via.apply(&trunk_file("after", "3651", 5, 36590));
    assert!(via.has_trunk("five") && via.has_trunk("after"));
}

#[test]
fn a_node_cut_off_from_the_majority_admits_nothing() {
    let mut nodes = [Node::member(36600, 1, true), Node::member(36610, 2, false), Node::member(36620, 3, false)];
    join(&nodes[0], &nodes[1]);
    join(&nodes[0], &nodes[2]);
    let _pbx = uas(&scenario("uas_rr.xml"), 36690, false);
    nodes[0].apply(&trunk_file("minority", "3660", 5, 36690));
    let t0 = Instant::now();
    while !nodes[2].cli(&["trunk", "list", "-o", "json"]).stdout.windows(10).any(|w| w == b"\"minority\"") {
        assert!(t0.elapsed() < Duration::from_secs(10), "trunk not replicated");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(Uac::new(&scenario("uac_rr.xml"), &nodes[2], 36630, "3660").calls(1).rate(1).run(), Calls { ok: 1, failed: 0 });
    nodes[0].kill();
    nodes[1].kill();
    // the survivor still knows the trunk (local read) but cannot admit: 503 with Retry-After (cause 41)
    // at once, and a CDR saying why
    let dir = tempfile::tempdir().expect("tmp");
    let r = Uac::new(&with_code(dir.path(), "uac_expect.xml", 503), &nodes[2], 36631, "3660").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 });
    let cdr =
        nodes[2].wait_cdrs(|c| c["trunk"] == "minority" && c["disposition"] == "CONGESTION" && c["cause"] == "CLUSTER_UNAVAILABLE", 1);
    assert_eq!(cdr.len(), 1, "{:?}", nodes[2].cdrs());
}

#[test]
fn a_pbx_registered_through_one_node_is_reached_through_another() {
    let n1 = Node::member(36700, 1, true);
    let n2 = Node::member(36710, 2, false);
    join(&n1, &n2);
    n1.apply(
        "id = \"reg\"\nnumbers = [\"3670\"]\nmax_concurrent_calls = 5\n[primary]\nauth = \"digest\"\nusername = \"pbx-x\"\npassword = \"secret-pass\"\n",
    );
    let _pbx = uas(&scenario("uas_rr.xml"), 36791, false);
    let ok = std::process::Command::new("timeout")
        .args(["30", "sipp", "-sf"])
        .arg(scenario("pbx_register.xml"))
        .args(["-i", "127.0.0.1", "-p", "36790", &format!("127.0.0.1:{}", n1.sip), "-m", "1", "-nostdin"])
        .args(["-au", "pbx-x", "-ap", "secret-pass", "-key", "user", "pbx-x", "-key", "expires", "600", "-key", "contact_port", "36791"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "registration through node 1 failed:\n{}", n1.log());
    // node 2 learns the binding from the replicated state and delivers there
    let t0 = Instant::now();
    loop {
        let v = json(&n2.cli(&["trunk", "get", "reg", "-o", "json"]));
        if v["state"]["primary"]["registered"].as_str().is_some_and(|c| c.contains("36791")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "binding not replicated: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(Uac::new(&scenario("uac_rr.xml"), &n2, 36730, "3670").calls(2).rate(10).run(), Calls { ok: 2, failed: 0 });
}

//! A registered PBX behind a real NAT, in a two-node cluster: network namespaces joined by veth
//! pairs, nftables masquerading the PBX's private network, SIPp as the PBX inside it. The PBX
//! registers through node 1 over UDP, then over TCP; calls entering on node 2 reach it through
//! node 1, over the flow its REGISTER came on, although the NAT drops anything from node 2's
//! address. (Linux's NAT also lets in only what answers the PBX's own mapping: node 1's address
//! and port.)

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NAT: &str = "htn-nat";
const PBX: &str = "htn-pbx";
/// Node 1 and node 2's SIP addresses, on the host's end of the link to the NAT.
const N1: &str = "10.213.1.1";
const N2: &str = "10.213.1.3";
const PBX_IP: &str = "192.168.213.2";

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The namespaces and links, gone again on drop (also those a killed earlier run left).
struct Network;

impl Network {
    fn up() -> Network {
        Network::down();
        run(&["ip", "netns", "add", NAT]);
        run(&["ip", "netns", "add", PBX]);
        run(&["ip", "link", "add", "htn-h", "type", "veth", "peer", "name", "htn-r", "netns", NAT]);
        run(&["ip", "addr", "add", &format!("{N1}/24"), "dev", "htn-h"]);
        run(&["ip", "addr", "add", &format!("{N2}/24"), "dev", "htn-h"]);
        run(&["ip", "link", "set", "htn-h", "up"]);
        run(&["ip", "-n", NAT, "addr", "add", "10.213.1.2/24", "dev", "htn-r"]);
        run(&["ip", "-n", NAT, "link", "set", "htn-r", "up"]);
        run(&["ip", "-n", NAT, "link", "add", "htn-in", "type", "veth", "peer", "name", "htn-p", "netns", PBX]);
        run(&["ip", "-n", NAT, "addr", "add", "192.168.213.1/24", "dev", "htn-in"]);
        run(&["ip", "-n", NAT, "link", "set", "htn-in", "up"]);
        run(&["ip", "-n", PBX, "addr", "add", &format!("{PBX_IP}/24"), "dev", "htn-p"]);
        run(&["ip", "-n", PBX, "link", "set", "htn-p", "up"]);
        run(&["ip", "-n", PBX, "link", "set", "lo", "up"]);
        run(&["ip", "-n", PBX, "route", "add", "default", "via", "192.168.213.1"]);
        run(&["ip", "netns", "exec", NAT, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // masquerade the PBX's network; drop anything from node 2's address (a chain named `fwd`
        // is a syntax error: it is an nft keyword)
        let rules = format!(
            "table ip nat {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n  oifname \"htn-r\" masquerade\n }}\n}}\n\
             table inet guard {{\n chain through {{\n  type filter hook forward priority filter;\n  ip saddr {N2} drop\n }}\n\
             chain tonat {{\n  type filter hook input priority filter;\n  ip saddr {N2} drop\n }}\n}}\n"
        );
        let mut nft = Command::new("ip").args(["netns", "exec", NAT, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
        use std::io::Write;
        nft.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("rules");
        assert!(nft.wait().expect("nft").success(), "nftables rules refused");
        Network
    }

    fn down() {
        let _ = Command::new("ip").args(["link", "del", "htn-h"]).stderr(Stdio::null()).status();
        for ns in [NAT, PBX] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        Network::down();
    }
}

/// SIPp as the PBX inside its namespace: registers through node 1 (`tcp`: over TCP) and answers
/// calls on the same socket.
fn pbx(node1: u16, tcp: bool, log: &std::path::Path) -> Child {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", PBX, "sipp", "-sf"]).arg(scenario("pbx_nat.xml")).arg("-oocsf").arg(scenario("uas_rr.xml"));
    c.args(["-i", PBX_IP, "-p", "5070", &format!("{N1}:{node1}"), "-m", "1", "-nostdin"]);
    c.args(["-au", "pbx-nat", "-ap", "correct-horse", "-key", "user", "pbx-nat", "-key", "expires", "600", "-key", "contact_port", "5070"]);
    c.arg("-trace_err").arg("-error_file").arg(log);
    if tcp {
        c.args(["-t", "t1"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn sipp in the PBX namespace")
}

fn registered(node: &Node) -> Option<String> {
    let out = node.cli(&["trunk", "get", "nat", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["state"]["primary"]["registered"].as_str().map(str::to_string)
}

#[test]
fn a_pbx_behind_nat_gets_calls_entering_on_another_node_over_its_flow() {
    require_sipp();
    let _net = Network::up();
    let (p1, p2) = (39600u16, 39610u16);
    let member = |base: u16, id: u64, ip: &str, bootstrap: bool| {
        let mut n = Node::start_full(
            base,
            &format!("id = {id}\nname = \"n{id}\"\nzone = \"z{id}\""),
            &format!("listen = [\"udp:{ip}:{base}\", \"tcp:{ip}:{base}\"]\nnat_keepalive_s = 2"),
            &format!("bootstrap = {bootstrap}\nheartbeat_ms = 100\nelection_min_ms = 800\nelection_max_ms = 1600"),
            "",
        );
        n.host = ip.to_string();
        n
    };
    let n1 = member(p1, 1, N1, true);
    let n2 = member(p2, 2, N2, false);
    join(&n1, &n2);
    n1.apply(
        "id = \"nat\"\nnumbers = [\"3960\"]\nmax_concurrent_calls = 4\n\
         [primary]\nauth = \"digest\"\nusername = \"pbx-nat\"\npassword = \"correct-horse\"\n",
    );
    let dir = tempfile::tempdir().expect("tmp");
    for (tcp, uac_port) in [(false, 39620u16), (true, 39630)] {
        let mut pbx = pbx(p1, tcp, &dir.path().join(format!("pbx-{tcp}.log")));
        let t0 = Instant::now();
        while !registered(&n1).is_some_and(|c| c.contains(PBX_IP)) {
            assert!(t0.elapsed() < Duration::from_secs(10), "the PBX did not register (tcp: {tcp}):\n{}", n1.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        // wait for node 2 to see the replicated binding, then call in through node 2
        std::thread::sleep(Duration::from_millis(1000));
        let r = Uac::new(&scenario("uac_rr.xml"), &n2, uac_port, "3960").calls(2).rate(5).run();
        assert_eq!(r, Calls { ok: 2, failed: 0 }, "calls through node 2 (tcp: {tcp}):\nnode 2:\n{}\nnode 1:\n{}", n2.log(), n1.log());
        // and through node 1, which holds the flow
        let r = Uac::new(&scenario("uac_rr.xml"), &n1, uac_port + 1, "3960").calls(1).rate(1).run();
        assert_eq!(r, Calls { ok: 1, failed: 0 }, "a call through node 1 (tcp: {tcp})");
        let _ = pbx.kill();
        let _ = pbx.wait();
    }
    let cdrs = n2.wait_cdrs(|c| c["trunk"] == "nat", 4);
    assert!(cdrs.iter().all(|c| c["disposition"] == "ANSWERED"), "{cdrs:?}");
    assert!(cdrs.iter().all(|c| c["attempts"][0]["target"].as_str().is_some_and(|t| t.contains("via n1"))), "{cdrs:?}");
}

//! Faults with data at stake, on real processes: the data directory's filesystem filling up (a
//! small tmpfs mounted for the test), and every member of a cluster killed with SIGKILL in turn
//! while calls run and configuration changes are acknowledged. Nothing acknowledged may be lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs of `mb` MiB mounted for the test's life (the tests run as root, as CI does).
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(mb: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path().join("mnt");
        std::fs::create_dir_all(&at).expect("mkdir");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(&at).status();
        assert!(ok.is_ok_and(|s| s.success()), "cannot mount a tmpfs (the tests run as root)");
        Tmpfs(at, dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn trunk_file(id: &str, number: &str) -> String {
    TrunkFile::new(id, number, (35598, 35599)).limit(5).mode("only-primary").toml()
}

fn listed(node: &Node) -> Vec<String> {
    let out = node.cli(&["trunk", "list", "-o", "json"]);
    assert!(out.status.success(), "list: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array().map(|a| a.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// Fill the filesystem holding `dir` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_disk_stops_the_node_clearly_and_loses_nothing_acknowledged() {
    require_sipp();
    let fs = Tmpfs::mount(24);
    let data = fs.0.join("data");
    let mut node = Node::start_full(35500, &format!("data_dir = \"{}\"", data.display()), "", "", "");

    let mut acked = Vec::new();
    let mut refused = 0;
    node.apply(&trunk_file("before", "100"));
    acked.push("before".to_string());
    let filler = fill(&fs.0);
    for i in 0..40 {
        let id = format!("full{i}");
        let out = node.try_apply(&trunk_file(&id, &format!("2{i:02}")));
        if out.status.success() {
            acked.push(id);
        } else {
            refused += 1;
            if refused >= 3 {
                break;
            }
        }
    }
    assert!(refused > 0, "the disk never filled:\n{}", node.log());
    eprintln!("acknowledged {} changes, refused {refused} once the disk was full", acked.len());
    // the node does not linger without its Raft part: it exits, saying why and what to do
    let t0 = Instant::now();
    while !node.exited() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the node kept running with a stopped Raft:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = node.log();
    assert!(log.contains("No space left on device") && log.contains("start it again"), "{log}");

    // space back: it starts, and every acknowledged change is there
    std::fs::remove_file(filler).expect("free space");
    node = node.restart();
    let t0 = Instant::now();
    loop {
        let have = listed(&node);
        if acked.iter().all(|a| have.contains(a)) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "acknowledged {acked:?}, listed {have:?}:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    node.apply(&trunk_file("after", "300"));
}

/// Apply `id` through `via`, retrying while an election runs; true once acknowledged.
fn apply_acked(via: &Node, id: &str, number: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if via.try_apply(&trunk_file(id, number)).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

#[test]
fn every_member_killed_in_turn_under_calls_loses_nothing_acknowledged() {
    let mut nodes = vec![Node::member(35600, 1, true), Node::member(35610, 2, false), Node::member(35620, 3, false)];
    join(&nodes[0], &nodes[1]);
    join(&nodes[0], &nodes[2]);
    let _pbx = uas(&scenario("uas_rr.xml"), 35690, false);
    nodes[0].apply(&TrunkFile::new("rot", "3560", (35690, 35691)).limit(10).mode("only-primary").toml());
    let mut acked = vec!["rot".to_string()];
    for (round, victim) in [1usize, 2, 0].into_iter().enumerate() {
        let entry = (victim + 1) % 3;
        let calls = std::thread::scope(|s| {
            let n = &nodes[entry];
            let load =
                s.spawn(move || Uac::new(&scenario("uac_rr.xml"), n, 35630 + round as u16, "3560").calls(40).rate(10).hold_ms(800).run());
            std::thread::sleep(Duration::from_secs(1));
            assert!(apply_acked(&nodes[entry], &format!("w{round}"), &format!("356{round}1")), "write before the kill");
            acked.push(format!("w{round}"));
            nodes[victim].signal("KILL");
            if apply_acked(&nodes[entry], &format!("x{round}"), &format!("356{round}2")) {
                acked.push(format!("x{round}"));
            }
            load.join().expect("load")
        });
        assert!(calls.ok > 0, "no call completed while node {} was down: {calls:?}", victim + 1);
        let restarted = nodes.remove(victim).restart();
        nodes.insert(victim, restarted);
        // the restarted member catches up with everything acknowledged, including what it missed
        let t0 = Instant::now();
        while !acked.iter().all(|a| listed(&nodes[victim]).contains(a)) {
            assert!(t0.elapsed() < Duration::from_secs(30), "node {} lacks some of {acked:?}:\n{}", victim + 1, nodes[victim].log());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // every slot taken by the calls is back, as every member sees it
    for n in &nodes {
        assert_eq!(n.settled_in_use("rot", 0), 0, "slots leaked:\n{}", n.log());
        let have = listed(n);
        assert!(acked.iter().all(|a| have.contains(a)), "acknowledged {acked:?}, listed {have:?}");
    }
}

//! Crash safety of the Raft log: `kill -9` during a stream of acknowledged writes, 20 times
//! over; after each restart every acknowledged write is there and the store opens cleanly.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn acknowledged_writes_survive_kill_9_twenty_times() {
    let mut node = Node::start(37000, "");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut serial = 0u32;
    for round in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, acked) = (stop.clone(), acked.clone());
            let (admin, dir) = (node.admin, node.dir.path().to_path_buf());
            let start = serial;
            std::thread::spawn(move || {
                let mut n = start;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("t{n}");
                    let path = dir.join(format!("{id}.toml"));
                    let text = format!(
                        "id = \"{id}\"\nnumbers = [\"{}\"]\nmax_concurrent_calls = 1\n[primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:9\"\nallowed_ips = [\"127.0.0.9\"]\n",
                        100_000 + n
                    );
                    std::fs::write(&path, text).expect("write");
                    let out = std::process::Command::new(hatrunk_bin())
                        .args(["--endpoints", &format!("127.0.0.1:{admin}"), "trunk", "apply"])
                        .arg(&path)
                        .output()
                        .expect("cli");
                    if out.status.success() {
                        acked.lock().expect("lock").push(id);
                    }
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 37 * (round % 7)));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        serial = writer.join().expect("writer");
        node = node.restart();
        let t0 = Instant::now();
        let listed = loop {
            let out = node.cli(&["trunk", "list", "-o", "json"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                let ids: Vec<String> = v.as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(str::to_string)).collect();
                let want = acked.lock().expect("lock").len();
                if ids.len() >= want {
                    break ids;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "round {round}: node did not come back with its writes:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        for id in acked.lock().expect("lock").iter() {
            assert!(listed.contains(id), "round {round}: acknowledged trunk {id} lost after kill -9");
        }
    }
    assert!(acked.lock().expect("lock").len() >= 20, "too few writes to mean anything");
}

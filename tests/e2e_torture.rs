//! RFC 4475 torture messages over UDP and TCP against a real node, inside a network namespace with
//! only loopback (the messages' Via headers name documentation addresses: nothing may leave the box).

mod common;

use std::process::Command;

use common::*;

#[test]
fn torture_messages_in_a_loopback_only_namespace() {
    let ns = format!("hatrunk-torture-{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
    assert!(ip(&["netns", "add", &ns]), "cannot create network namespace {ns} (needs root and iproute2)");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));
    let work = tempfile::tempdir().expect("tmp");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "python3"])
        .arg(repo().join("tests/torture.py"))
        .arg(hatrunk_bin())
        .arg(shared())
        .arg(work.path())
        .output()
        .expect("run torture.py");
    // slow OPTIONS answers are reported (not failed) by torture.py on stderr: keep them in the test log
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(work.path().join("node.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n{}\nnode log (tail):\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}

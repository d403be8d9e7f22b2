//! What a node prints (issue 21), started as an operator would, without any log variable: its own
//! events at INFO and nothing of its dependencies below WARN (openraft's `RaftState` dumps and
//! replication housekeeping filled the first screen); `--log-format json` gives one JSON object
//! per line; a bad `--log-level` is a usage error.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Start a node with `args`, apply a trunk and place a call so the log has more than the start,
/// then stop it and return what it printed.
fn log_of(base: u16, args: &[&str]) -> String {
    let node = Node::start_logging(base, args);
    let _pbx = uas(&scenario("uas_rr.xml"), base + 11, false);
    node.apply(&TrunkFile::new("logs", "3890", (base + 11, base + 11)).limit(5).toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 20, "3890").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "{}", node.log());
    let t0 = Instant::now();
    while !node.log().contains("trunk applied") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    node.log()
}

#[test]
fn by_default_a_node_prints_its_own_events_and_no_dependency_info() {
    let log = log_of(38900, &[]);
    let mut own_info = 0;
    for line in log.lines() {
        // `2026-11-30T10:00:00.000000Z  INFO hatrunk_node::runtime: ...`
        let mut words = line.split_whitespace().skip(1);
        let (Some(level), Some(target)) = (words.next(), words.next()) else { continue };
        if matches!(level, "INFO" | "DEBUG" | "TRACE") {
            assert!(target.starts_with("hatrunk"), "a dependency logged below WARN by default: {line}\n{log}");
            own_info += 1;
        }
    }
    assert!(own_info > 0 && log.contains("hatrunk node running"), "the node's own INFO lines are there:\n{log}");
    assert!(!log.contains("RaftState"), "{log}");
}

#[test]
fn log_format_json_prints_one_object_per_line() {
    let log = log_of(38930, &["--log-format", "json", "--log-level", "debug"]);
    let mut n = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["target"].is_string() && v["timestamp"].is_string(), "{line}");
        if v["level"] == "DEBUG" {
            assert!(v["target"].as_str().is_some_and(|t| t.starts_with("hatrunk")), "a level applies to hatrunk's crates: {line}");
        }
        n += 1;
    }
    assert!(n > 0 && log.contains("hatrunk node running"), "{log}");
}

#[test]
fn a_bad_log_level_is_a_usage_error() {
    let out = std::process::Command::new(hatrunk_bin()).args(["run", "--log-level", "info,openraft=loud"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad log filter"), "{out:?}");
}

/// Twelve calls in a row failing over from a Primary that answers 503: one line for the storm, not
/// one per call, as an operator reads it.
#[test]
fn a_failover_storm_is_said_once() {
    let node = Node::start_logging(38960, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let _failing = uas(&with_code(dir.path(), "uas_fail.xml", 503), 38971, false);
    let _dr = uas(&scenario("uas_rr.xml"), 38972, false);
    node.apply(&TrunkFile::new("storm", "3896", (38971, 38972)).limit(20).mode("auto-failover").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 38980, "3896").calls(12).rate(10).run();
    assert_eq!(r, Calls { ok: 12, failed: 0 });
    let log = node.log();
    assert_eq!(log.matches("failover storm: 10 calls failed over").count(), 1, "{log}");
    assert!(log.contains("trunk=storm") && log.contains("reason=\"503\""), "{log}");
}

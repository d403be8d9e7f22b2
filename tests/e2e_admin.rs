//! The admin API and CLI end to end: bad trunk files are refused whole, naming the field, and the
//! previous trunk keeps routing; JSON output for scripts.

mod common;

use common::*;

#[test]
fn bad_trunk_files_are_refused_whole_and_the_old_trunk_still_routes() {
    let node = Node::start(33000, "");
    let _p = uas(&scenario("uas_rr.xml"), 33011, false);
    let good = TrunkFile::new("acme", "3300", (33011, 33012)).limit(5).mode("only-primary").toml();
    node.apply(&good);
    node.apply(&TrunkFile::new("other", "3399", (33011, 33012)).limit(5).mode("only-primary").toml());
    let mistakes = [
        (good.replace("only-primary", "sometimes"), "mode"),
        (good.replace("max_concurrent_calls = 5", "max_concurrent_calls = 0"), "max_concurrent_calls"),
        (good.replace("127.0.0.9/32", "127.0.0.300/8"), "primary.allowed_ips[0]"),
        (good.replace("numbers = [\"3300\"]", "numbers = [\"3300\", \"3399\"]"), "3399 already belongs to trunk other"),
        (good.replace("auth = \"ip\"", "auth = \"token\""), "primary.auth"),
        (good.replace("sip:127.0.0.1:33011", "http://x"), "primary.target"),
        (format!("{good}\nfailover_codes = [503]"), "failover_codes"),
        ("this is not toml".to_string(), "does not parse"),
    ];
    for (text, field) in mistakes {
        let out = node.try_apply(&text.replace("max_concurrent_calls = 5\n", "max_concurrent_calls = 5\nmax_call_duration_s = 60\n"));
        assert_eq!(out.status.code(), Some(1), "{field}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "error for {field} was: {err}");
    }
    let out = node.cli(&["trunk", "get", "acme", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["mode"], "only-primary");
    assert_eq!(v["max_concurrent_calls"], 5);
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 33020, "3300").calls(2).rate(10).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
}

#[test]
fn cli_json_and_exit_codes() {
    let node = Node::start(33100, "");
    let out = node.cli(&["cluster", "members", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for k in ["id", "name", "region", "zone", "role", "voter", "leader", "healthy"] {
        assert!(v[0].get(k).is_some(), "members -o json lacks {k}: {v}");
    }
    // global flags before the verb work too
    let out = std::process::Command::new(hatrunk_bin())
        .args(["--endpoints", &format!("127.0.0.1:{}", node.admin), "-o", "json", "cluster", "status"])
        .output()
        .expect("cli");
    assert!(out.status.success());
    let out = node.cli(&["trunk", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = std::process::Command::new(hatrunk_bin()).args(["--endpoints", "127.0.0.1:1", "trunk", "list"]).output().expect("cli");
    assert_eq!(out.status.code(), Some(3));
    // a digest password is never echoed
    let t = "id = \"d\"\nnumbers = [\"3310\"]\nmax_concurrent_calls = 1\n[primary]\nauth = \"digest\"\nusername = \"pbx\"\npassword = \"supersecret1\"\n";
    node.apply(t);
    let out = node.cli(&["trunk", "get", "d", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("supersecret1") && text.contains("password_set"), "{text}");
}

#[test]
fn trunks_survive_a_restart_and_metrics_are_served() {
    let node = Node::start(33200, "");
    let _p = uas(&scenario("uas_rr.xml"), 33211, false);
    node.apply(&TrunkFile::new("keep", "3320", (33211, 33212)).limit(3).mode("only-primary").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 33220, "3320").calls(2).rate(10).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
    let m = node.http_get("/metrics");
    assert!(m.contains("hatrunk_calls_total{disposition=\"ANSWERED\",trunk=\"keep\"} 2"), "{m}");
    assert!(m.contains("hatrunk_pool_limit{trunk=\"keep\"} 3"), "{m}");
    assert!(node.http_get("/health").contains("ok"));
    let node = node.restart();
    let out = node.cli(&["trunk", "list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["id"], "keep", "{v}");
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 33221, "3320").calls(2).rate(10).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
}

fn revision(node: &Node, id: &str) -> u64 {
    let out = node.cli(&["trunk", "get", id, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["revision"].as_u64().expect("trunk get names the revision")
}

/// Compare-and-swap on trunks (PRODUCT.md: `apply` of a trunk that changed since it was read is
/// refused naming the current revision), and a delete or re-create with calls up never lets
/// them stop counting.
#[test]
fn a_stale_apply_is_refused_and_calls_up_keep_counting_through_delete_and_recreate() {
    let node = Node::start(33300, "");
    let _p = uas(&scenario("uas_rr.xml"), 33311, false);
    let file = TrunkFile::new("rev", "3330", (33311, 33312)).limit(2).mode("only-primary");
    node.apply(&file.toml());
    let r1 = revision(&node, "rev");
    node.apply(&format!("revision = {r1}\n{}", file.clone().limit(3).toml()));
    let r2 = revision(&node, "rev");
    assert!(r2 > r1);
    // a change prepared from what was read at r1 lands after the one above: refused, nothing changes
    let out = node.try_apply(&format!("revision = {r1}\n{}", file.clone().limit(9).toml()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("revision {r2}")) && err.contains("--force"), "{err}");
    let out = node.cli(&["trunk", "get", "rev", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((v["max_concurrent_calls"].as_u64(), v["revision"].as_u64()), (Some(3), Some(r2)));
    // the table shows the revision too
    let table = String::from_utf8_lossy(&node.cli(&["trunk", "list"]).stdout).to_string();
    assert!(table.contains("REVISION") && table.contains(&r2.to_string()), "{table}");
    // creating a trunk that exists, with revision 0, is refused the same way
    let out = node.try_apply(&format!("revision = 0\n{}", file.clone().limit(9).toml()));
    assert_eq!(out.status.code(), Some(1));
    // back to a limit of 2, then two calls held up
    node.apply(&file.toml());
    std::thread::scope(|s| {
        let held = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &node, 33320, "3330").calls(2).rate(20).hold_ms(6000).run());
        let t0 = std::time::Instant::now();
        while node.in_use("rev") < 2 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the two calls never came up");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = node.cli(&["trunk", "delete", "rev"]);
        assert_eq!(out.status.code(), Some(1), "a trunk with calls up is not deleted without --force");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
        assert!(node.has_trunk("rev"));
        let out = node.cli(&["trunk", "delete", "rev", "--force"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // re-created at once under the same id with the same limit: the two calls still up count
        node.apply(&file.toml());
        let r = Uac::new(&scenario("uac_rr.xml"), &node, 33321, "3330").calls(1).run();
        assert_eq!(r, Calls { ok: 0, failed: 1 }, "a third call over a limit of 2 while two are up");
        assert_eq!(held.join().expect("held calls"), Calls { ok: 2, failed: 0 }, "the deleted trunk's calls ended normally");
    });
    assert_eq!(node.settled_in_use("rev", 0), 0, "their slots went back as they ended");
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 33322, "3330").calls(2).rate(20).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
    assert_eq!(node.settled_in_use("rev", 0), 0, "the node's reserve goes back a second after its last call");
    let out = node.cli(&["trunk", "delete", "rev"]);
    assert!(out.status.success(), "no calls up: a plain delete: {}", String::from_utf8_lossy(&out.stderr));
}

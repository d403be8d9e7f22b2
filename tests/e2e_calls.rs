//! Call handling end to end: silence and unreachable ports, TCP, CANCEL, the shared limit.

mod common;

use common::*;

#[test]
fn silent_primary_fails_over_after_the_failover_timer() {
    let node = Node::start(32000, "");
    let _p = uas(&scenario("uas_silent.xml"), 32011, false);
    let _s = uas(&scenario("uas_rr.xml"), 32012, false);
    node.apply(&TrunkFile::new("silent", "3200", (32011, 32012)).limit(5).mode("auto-failover").with("failover_timeout_ms = 1000").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32020, "3200").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 });
    let c = &node.wait_cdrs(|c| c["trunk"] == "silent", 1)[0];
    assert_eq!(c["failover"], true);
    assert_eq!(c["attempts"][0]["error"], "no_answer");
    let waited = c["attempts"][0]["elapsed_ms"].as_u64().unwrap_or(0);
    assert!((1000..2500).contains(&waited), "failover timer of 1000 ms, waited {waited}");
}

#[test]
fn unreachable_primary_fails_over_at_once() {
    let node = Node::start(32100, "");
    let _s = uas(&scenario("uas_rr.xml"), 32112, false);
    // nothing listens on 32111 (UDP: ICMP port unreachable)
    node.apply(&TrunkFile::new("gone", "3210", (32111, 32112)).limit(5).mode("auto-failover").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32120, "3210").calls(3).rate(10).run();
    assert_eq!(r, Calls { ok: 3, failed: 0 });
    for c in node.wait_cdrs(|c| c["trunk"] == "gone", 3) {
        assert_eq!(c["attempts"][0]["error"], "connection_error", "{c}");
        assert!(c["attempts"][0]["elapsed_ms"].as_u64().unwrap_or(99_999) < 500, "not at once: {c}");
    }
}

#[test]
fn tcp_caller_and_tcp_primary() {
    let node = Node::start(32200, "");
    let _p = uas(&scenario("uas_rr.xml"), 32211, true);
    let _s = uas(&scenario("uas_rr.xml"), 32212, false);
    let t = TrunkFile::new("tcp", "3220", (32211, 32212)).limit(5).mode("only-primary").toml().replacen(
        "allowed_ips",
        "transport = \"tcp\"\nallowed_ips",
        1,
    );
    node.apply(&t);
    // caller over TCP, Primary over TCP
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32220, "3220").calls(5).rate(10).args(&["-t", "t1"]).run();
    assert_eq!(r, Calls { ok: 5, failed: 0 });
    // caller over UDP, Primary over TCP (double Record-Route bridges the transports)
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32221, "3220").calls(5).rate(10).run();
    assert_eq!(r, Calls { ok: 5, failed: 0 });
    // failover over TCP: a refused TCP connection fails over at once
    let t = TrunkFile::new("tcp2", "3221", (32219, 32212)).limit(5).mode("auto-failover").toml().replacen(
        "allowed_ips",
        "transport = \"tcp\"\nallowed_ips",
        1,
    );
    node.apply(&t);
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32222, "3221").calls(2).rate(10).args(&["-t", "t1"]).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "tcp2", 2);
    assert!(cdrs.iter().all(|c| c["attempts"][0]["error"] == "connection_error"), "{cdrs:?}");
}

#[test]
fn cancel_while_ringing_gives_487_and_never_fails_over() {
    let node = Node::start(32300, "");
    let _p = uas(&scenario("uas_ring.xml"), 32311, false);
    let _s = uas(&scenario("uas_rr.xml"), 32312, false);
    node.apply(&TrunkFile::new("cancel", "3230", (32311, 32312)).limit(5).mode("auto-failover").toml());
    let r = Uac::new(&scenario("uac_cancel.xml"), &node, 32320, "3230").calls(3).rate(10).run();
    assert_eq!(r, Calls { ok: 3, failed: 0 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "cancel", 3);
    for c in &cdrs {
        assert_eq!(c["failover"], false, "{c}");
        assert_eq!(c["cause"], "ORIGINATOR_CANCEL");
        assert_eq!(c["attempts"].as_array().map(|a| a.len()), Some(1));
    }
    assert_eq!(node.settled_in_use("cancel", 0), 0);
}

#[test]
fn the_limit_admits_exactly_its_size_then_frees_up() {
    let node = Node::start(32400, "");
    let _p = uas(&scenario("uas_rr.xml"), 32411, false);
    let _s = uas(&scenario("uas_rr.xml"), 32412, false);
    node.apply(&TrunkFile::new("lim", "3240", (32411, 32412)).limit(10).mode("only-primary").toml());
    // 30 long calls at once: 10 answered, 20 refused with 503
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32420, "3240").calls(30).rate(200).hold_ms(3000).run();
    assert_eq!(r, Calls { ok: 10, failed: 20 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "lim", 30);
    let congested = cdrs.iter().filter(|c| c["disposition"] == "CONGESTION" && c["cause"] == "CALL_LIMIT_EXCEEDED").count();
    assert_eq!(congested, 20);
    assert_eq!(node.settled_in_use("lim", 0), 0);
    // once they ended, 10 more are answered
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32421, "3240").calls(10).rate(100).hold_ms(1000).run();
    assert_eq!(r, Calls { ok: 10, failed: 0 });
}

#[test]
fn a_primary_probed_down_is_skipped_straight_to_the_secondary() {
    let node = Node::start(32500, "");
    let _s = uas(&scenario("uas_rr.xml"), 32512, false);
    // nothing answers OPTIONS on 32511: two failed probes mark the Primary down
    let t = TrunkFile::new("probe", "3250", (32511, 32512)).limit(5).mode("auto-failover").toml().replacen(
        "allowed_ips",
        "probe_interval_ms = 200\nprobe_down_after = 2\nallowed_ips",
        1,
    );
    node.apply(&t);
    let t0 = std::time::Instant::now();
    loop {
        let out = node.cli(&["trunk", "get", "probe", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        if v["state"]["primary"]["health"] == "down" {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "primary never probed down: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 32520, "3250").calls(2).rate(10).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
    for c in node.wait_cdrs(|c| c["trunk"] == "probe", 2) {
        assert_eq!(c["primary_skipped"], true, "{c}");
        assert_eq!(c["attempts"].as_array().map(|a| a.len()), Some(1), "{c}");
        assert_eq!(c["attempts"][0]["account"], "secondary");
    }
    assert!(node.http_get("/metrics").contains("hatrunk_account_health{account=\"primary\",trunk=\"probe\"} 0"));
}

#[test]
fn a_call_whose_bye_never_comes_gives_its_slot_back_after_the_maximum_duration() {
    let node = Node::start(32600, "");
    let _p = uas(&scenario("uas_rr.xml"), 32611, false);
    node.apply(&TrunkFile::new("long", "3260", (32611, 32612)).limit(1).mode("only-primary").with("max_call_duration_s = 10").toml());
    // one call held for 14 s, in the background
    let n2 = node.sip;
    let caller = std::thread::spawn(move || {
        std::process::Command::new("timeout")
            .args(["60", "sipp", "-sf"])
            .arg(scenario("uac_rr.xml"))
            .args(["-i", "127.0.0.1", "-p", "32620", &format!("127.0.0.1:{n2}"), "-s", "3260", "-m", "1", "-d", "14000", "-nostdin"])
            .output()
    });
    assert_eq!(node.settled_in_use("long", 1), 1);
    // reclaimed at the 10 s maximum, before the caller's BYE at 14 s: the CDR's cause says which
    // (the exact instant is the engine test's, on simulated time: proxy/tests_time.rs)
    let t0 = std::time::Instant::now();
    while node.in_use("long") != 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the safety timer must reclaim the slot");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let c = node.wait_cdrs(|c| c["trunk"] == "long", 1);
    assert_eq!(c[0]["cause"], "MAX_DURATION_EXCEEDED", "{}", c[0]);
    let _ = caller.join();
}

/// A session timer set by the PBX's answer (`Session-Expires: 3`, refresher the caller): the
/// caller is killed with the call up and never refreshes nor hangs up. The node ends the session:
/// the PBX gets a BYE (its SIPp scenario completes only on one), the slot comes back long before
/// `max_call_duration_s`, and the CDR says SESSION_EXPIRED.
#[test]
fn a_session_nobody_refreshes_is_ended_with_a_bye_and_its_slot_comes_back() {
    let node = Node::start(32700, "");
    let mut pbx = std::process::Command::new("sipp")
        .arg("-sf")
        .arg(scenario("uas_session.xml"))
        .args(["-i", "127.0.0.1", "-p", "32711", "-m", "1", "-nostdin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sipp");
    std::thread::sleep(std::time::Duration::from_millis(300));
    node.apply(&TrunkFile::new("timed", "3270", (32711, 32712)).limit(1).mode("only-primary").toml());
    let n = node.sip;
    let mut caller = std::process::Command::new("sipp")
        .arg("-sf")
        .arg(scenario("uac_rr.xml"))
        .args(["-i", "127.0.0.1", "-p", "32720", &format!("127.0.0.1:{n}"), "-s", "3270", "-m", "1", "-d", "60000", "-nostdin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sipp");
    assert_eq!(node.settled_in_use("timed", 1), 1, "the call is up");
    let _ = caller.kill(); // the caller dies: no refresh, no BYE
    let _ = caller.wait();
    let t0 = std::time::Instant::now();
    while node.in_use("timed") != 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the session timer must end the call:\n{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let c = node.wait_cdrs(|c| c["trunk"] == "timed", 1);
    assert_eq!(c[0]["cause"], "SESSION_EXPIRED", "{}", c[0]);
    // the PBX's scenario ends with the BYE it was waiting for
    let status = (0..50).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        pbx.try_wait().ok().flatten()
    });
    let _ = pbx.kill();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "the PBX got its BYE and answered it");
}

//! The three modes and both failover tables, end to end: a real node, SIPp as carrier and PBXes.

mod common;

use common::*;

#[test]
fn only_primary_sends_every_call_to_the_primary() {
    let node = Node::start(31000, "");
    let _p = uas(&scenario("uas_rr.xml"), 31011, false);
    let _s = uas(&scenario("uas_rr.xml"), 31012, false);
    node.apply(&TrunkFile::new("op", "3100", (31011, 31012)).limit(30).mode("only-primary").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 31020, "3100").calls(10).rate(20).run();
    assert_eq!(r, Calls { ok: 10, failed: 0 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "op", 10);
    assert_eq!(answered_by(&cdrs), (10, 0));
}

#[test]
fn load_balancing_alternates_evenly_and_never_retries() {
    let node = Node::start(31100, "");
    let _p = uas(&scenario("uas_rr.xml"), 31111, false);
    let _s = uas(&scenario("uas_rr.xml"), 31112, false);
    node.apply(&TrunkFile::new("lb", "3110", (31111, 31112)).limit(30).mode("load-balancing").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 31120, "3110").calls(20).rate(20).run();
    assert_eq!(r, Calls { ok: 20, failed: 0 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "lb", 20);
    assert_eq!(answered_by(&cdrs), (10, 10));

    // a failing Primary is not retried: the calls it gets fail, the Secondary's succeed
    let dir = tempfile::tempdir().expect("tmp");
    let _f = uas(&with_code(dir.path(), "uas_fail.xml", 503), 31113, false);
    node.apply(&TrunkFile::new("lb2", "3111", (31113, 31112)).limit(30).mode("load-balancing").toml());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 31121, "3111").calls(10).rate(20).run();
    assert_eq!(r, Calls { ok: 5, failed: 5 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "lb2", 10);
    assert!(cdrs.iter().all(|c| c["failover"] == false && c["attempts"].as_array().map(|a| a.len()) == Some(1)));
}

/// One trunk per code, each with a Primary failing with that code and a shared answering Secondary.
fn failover_table(base: u16, policy: &str, codes: &[u16], expect_failover: bool) {
    let node = Node::start(base, "");
    let dir = tempfile::tempdir().expect("tmp");
    let _s = uas(&scenario("uas_rr.xml"), base + 10, false);
    let mut pbxes = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let port = base + 20 + i as u16;
        pbxes.push(uas(&with_code(dir.path(), "uas_fail.xml", *code), port, false));
        node.apply(
            &TrunkFile::new(&format!("t{code}"), &format!("{}", 40000 + u32::from(*code)), (port, base + 10))
                .limit(5)
                .mode("auto-failover")
                .with(policy)
                .toml(),
        );
    }
    for code in codes {
        let number = format!("{}", 40000 + u32::from(*code));
        let r = if expect_failover {
            Uac::new(&scenario("uac_rr.xml"), &node, base + 5, &number).calls(1).rate(1).run()
        } else {
            // a 503 the caller sees became 500 (RFC 3261 section 16.7)
            let seen = if *code == 503 { 500 } else { *code };
            Uac::new(&with_code(dir.path(), "uac_expect.xml", seen), &node, base + 5, &number).calls(1).rate(1).run()
        };
        assert_eq!(r, Calls { ok: 1, failed: 0 }, "{policy} code {code}");
        let cdr = node.wait_cdrs(|c| c["trunk"] == format!("t{code}"), 1);
        assert_eq!(cdr.len(), 1, "code {code}");
        assert_eq!(cdr[0]["failover"], expect_failover, "code {code}: {}", cdr[0]);
        assert_eq!(cdr[0]["attempts"][0]["code"], *code);
        assert_eq!(node.settled_in_use(&format!("t{code}"), 0), 0, "slot back after code {code}");
    }
}

#[test]
fn auto_failover_current_policy_fails_over_on_each_code_of_its_table() {
    failover_table(31200, "", &[408, 480, 500, 501, 502, 503, 504, 505, 513, 580], true);
}

#[test]
fn auto_failover_current_policy_does_not_fail_over_on_other_codes() {
    failover_table(31300, "", &[401, 407, 404, 486, 403, 599, 603, 600], false);
}

#[test]
fn legacy_policy_fails_over_on_its_table_and_not_on_503() {
    failover_table(31400, "failover_policy = \"legacy\"", &[401, 407, 408, 404], true);
    failover_table(31450, "failover_policy = \"legacy\"", &[503], false);
}

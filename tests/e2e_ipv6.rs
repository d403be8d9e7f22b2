//! IPv6 end to end (issue 19): a node whose SIP listens on `[::1]`, the carrier and both PBXes on
//! `::1`. The node used to write its own Via and Record-Route without brackets (`Via: SIP/2.0/UDP
//! ::1:37060`), then could not parse the answers echoing them: a Primary's 503 was dropped as
//! malformed and the call waited out the failover timer.

mod common;

use common::*;

/// A trunk whose two accounts are SIPp PBXes on `[::1]`.
fn v6_trunk(id: &str, number: &str, pbx: (u16, u16), mode: &str) -> String {
    format!(
        "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = 20\nmode = \"{mode}\"\nfailover_timeout_ms = 2500\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:[::1]:{}\"\nallowed_ips = [\"::1/128\"]\n\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:[::1]:{}\"\nallowed_ips = [\"::1/128\"]\n",
        pbx.0, pbx.1
    )
}

#[test]
fn calls_over_ipv6_udp_and_tcp_are_answered_and_a_failing_primary_fails_over_at_once() {
    let base = 37600u16;
    let sip = format!("listen = [\"udp:[::1]:{base}\", \"tcp:[::1]:{base}\"]");
    let mut node = Node::start_sip_listen(base, &sip, "");
    node.host = "[::1]".into();
    let dir = tempfile::tempdir().expect("tmp");
    let _primary = uas_on("::1", &scenario("uas_rr.xml"), base + 11, false);
    let _failing = uas_on("::1", &with_code(dir.path(), "uas_fail.xml", 503), base + 12, false);
    let _secondary = uas_on("::1", &scenario("uas_rr.xml"), base + 13, false);
    node.apply(&v6_trunk("v6", "3760", (base + 11, base + 13), "only-primary"));
    node.apply(&v6_trunk("v6f", "3761", (base + 12, base + 13), "auto-failover"));

    // answered, with the BYE through our Record-Route
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 20, "3760").source_ip("::1").calls(5).rate(10).run();
    assert_eq!(r, Calls { ok: 5, failed: 0 }, "{}", node.log());
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "v6", 5);
    assert!(cdrs.iter().all(|c| c["disposition"] == "ANSWERED"), "{cdrs:?}");

    // the Primary's 503 is read the moment it arrives: failover long before the 2.5 s timer
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 21, "3761").source_ip("::1").calls(5).rate(10).run();
    assert_eq!(r, Calls { ok: 5, failed: 0 }, "{}", node.log());
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "v6f", 5);
    for c in &cdrs {
        assert_eq!(c["failover"], true, "{c}");
        assert_eq!(c["attempts"][0]["code"], 503, "the Primary's 503 was read: {c}");
        let ms = c["attempts"][0]["elapsed_ms"].as_u64().expect("elapsed_ms");
        assert!(ms < 1000, "the Primary's attempt lasted {ms} ms: its 503 was not read at once ({c})");
    }
    // over TCP: the carrier on TCP, a TCP Primary, and a UDP caller bridged to it (double
    // Record-Route, both entries with bracketed hosts)
    let _tcp_pbx = uas_on("::1", &scenario("uas_rr.xml"), base + 14, true);
    let tcp =
        v6_trunk("v6t", "3762", (base + 14, base + 13), "only-primary").replacen("allowed_ips", "transport = \"tcp\"\nallowed_ips", 1);
    node.apply(&tcp);
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 22, "3762").source_ip("::1").calls(3).rate(10).args(&["-t", "t1"]).run();
    assert_eq!(r, Calls { ok: 3, failed: 0 }, "{}", node.log());
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 23, "3762").source_ip("::1").calls(3).rate(10).run();
    assert_eq!(r, Calls { ok: 3, failed: 0 }, "{}", node.log());
    let metrics = node.http_get("/metrics");
    let malformed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("hatrunk_sip_malformed"))
        .filter_map(|l| l.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(malformed, 0.0, "nothing we got back was malformed:\n{metrics}");
}

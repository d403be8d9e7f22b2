//! Account rules end to end with SIPp on both sides: the number toward each PBX and toward the
//! carrier, a header the PBX must not see, Diversion on a failed-over call, the trunk's session
//! timer. The Secondary PBX's scenario checks its INVITE itself and aborts the call on a mismatch.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_failed_over_call_reaches_the_secondary_with_its_number_diversion_and_no_carrier_header() {
    let node = Node::start(39300, "");
    let dir = tempfile::tempdir().expect("tmp");
    let _busy = uas(&with_code(dir.path(), "uas_fail.xml", 486), 39311, false);
    let mut secondary = checking_pbx(39312, 2);
    let rules = "number_strip = \"+44\"\nnumber_add = \"0\"\nremove_headers = [\"X-Carrier-Internal\"]\n";
    node.apply(&format!(
        "id = \"rules\"\nnumbers = [\"+443930\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\n\
         failover_policy = \"custom\"\nfailover_codes = [486]\nsession_expires_s = 1800\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:39311\"\nallowed_ips = [\"127.0.0.9/32\"]\n{rules}\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:39312\"\nallowed_ips = [\"127.0.0.9/32\"]\n{rules}diversion = \"diversion\"\n"
    ));
    // the carrier's caller, with a header of its own network in its INVITE
    let uac = std::fs::read_to_string(scenario("uac_rr.xml")).expect("uac").replacen(
        "Max-Forwards: 70",
        "Max-Forwards: 70\n      X-Carrier-Internal: route-7",
        1,
    );
    let uac_path = dir.path().join("uac_header.xml");
    std::fs::write(&uac_path, uac).expect("write");
    let r = Uac::new(&uac_path, &node, 39320, "+443930").calls(2).rate(5).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 }, "the Secondary's checks:\n{}", node.log());
    assert_eq!(exit_of(&mut secondary), Some(0), "the Secondary PBX's checks passed for both calls");
    for c in node.wait_cdrs(|c| c["trunk"] == "rules", 2) {
        assert_eq!(c["attempts"][0]["code"], 486, "{c}");
        assert_eq!(c["attempts"][0]["target"], "sip:03930@127.0.0.1:39311", "the CDR names what was sent: {c}");
        assert_eq!(c["attempts"][1]["account"], "secondary", "{c}");
    }
    // the same trunk without the Secondary's rules: its checks fail, so they are not vacuous
    let mut unchecked = checking_pbx(39313, 1);
    let plain = "id = \"rules\"\nnumbers = [\"+443930\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\n\
         failover_policy = \"custom\"\nfailover_codes = [486]\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:39311\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:39313\"\nallowed_ips = [\"127.0.0.9/32\"]\n";
    node.apply(plain);
    let _ = Uac::new(&uac_path, &node, 39321, "+443930").calls(1).rate(1).run();
    assert_eq!(exit_of(&mut unchecked), Some(1), "SIPp exits 1 when a call failed: the checks refused the INVITE");
}

/// The checking Secondary PBX for `calls` calls; it exits 0 only if every call passed its checks.
fn checking_pbx(port: u16, calls: u32) -> std::process::Child {
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("uas_expect_rules.xml"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", &calls.to_string(), "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

/// The exit code of a SIPp that should be done within a few seconds (killed if not).
fn exit_of(c: &mut std::process::Child) -> Option<i32> {
    let status = (0..100).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        c.try_wait().ok().flatten()
    });
    let _ = c.kill();
    status.and_then(|s| s.code())
}

#[test]
fn an_outbound_call_reaches_the_carrier_in_e164() {
    let node = Node::start(39330, "[upstream]\ntarget = \"sip:127.0.0.1:39341\"\n");
    node.apply(
        "id = \"ob-rules\"\nnumbers = [\"3933\"]\nmax_concurrent_calls = 2\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.2:39342\"\nallowed_ips = [\"127.0.0.2/32\"]\n\
         outbound_number_strip = \"0\"\noutbound_number_add = \"+65\"\n",
    );
    let trace = node.dir.path().join("carrier.msg");
    let _carrier = uas_traced(&scenario("uas_rr.xml"), 39341, &trace);
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 39350, "061230000").source_ip("127.0.0.2").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 });
    let seen = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(seen.contains("INVITE sip:+6561230000@127.0.0.1:39341"), "carrier saw:\n{seen}");
    assert!(seen.contains("To: 061230000 <sip:+6561230000@"), "carrier saw:\n{seen}");
}

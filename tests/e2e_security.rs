//! Hostile input end to end with real SIPp: a flooding source banned while a second source keeps
//! placing calls.

mod common;

use common::*;

#[test]
fn a_flood_from_one_source_is_banned_while_another_keeps_calling() {
    // loopback is trusted by default; here it is not, so SIPp on 127.0.0.x is an outside source
    let node = Node::start(38000, "[security]\ntrusted = []\nmax_new_requests = 50\nwindow_ms = 2000\nban_s = 60\n");
    let _p = uas(&scenario("uas_rr.xml"), 38011, false);
    let _s = uas(&scenario("uas_rr.xml"), 38012, false);
    node.apply(&TrunkFile::new("sec", "3800", (38011, 38012)).limit(5000).mode("only-primary").toml());
    let n = &node;
    let honest = std::thread::scope(|s| {
        // the flood: 1,000 calls at 500/s from 127.0.0.2, twenty times the allowed rate
        let flood = s.spawn(move || {
            Uac::new(&scenario("uac_rr.xml"), n, 38020, "3800")
                .source_ip("127.0.0.2")
                .calls(1000)
                .rate(500)
                .args(&["-recv_timeout", "2000"])
                .run()
        });
        // an honest caller from 127.0.0.3, 2 calls/s, during and after the flood
        let honest = s.spawn(move || {
            Uac::new(&scenario("uac_rr.xml"), n, 38021, "3800")
                .source_ip("127.0.0.3")
                .calls(16)
                .rate(2)
                .args(&["-recv_timeout", "4000"])
                .run()
        });
        let f = flood.join().expect("flood");
        assert!(f.failed >= 800, "the flood was not cut off: {f:?}");
        assert!(f.ok <= 100, "more flood calls got through than the limit allows: {f:?}");
        honest.join().expect("honest")
    });
    assert_eq!(honest, Calls { ok: 16, failed: 0 }, "the second source was hurt by the first one's ban");
    let metrics = node.http_get("/metrics");
    let bans = metrics.lines().find(|l| l.starts_with("hatrunk_guard_bans_total")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("0");
    assert_eq!(bans, "1", "one source banned:\n{metrics}");
    assert!(node.log().contains("source banned"), "the ban is logged");
}

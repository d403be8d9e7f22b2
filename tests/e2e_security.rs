//! Hostile input end to end with real SIPp and sipvicious: a flooding source banned while a second
//! source keeps placing calls; password guessing from a trusted address bans nobody.

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

/// sipvicious's `svcrack` guesses a digest account's password from 127.0.0.1, which is trusted (the
/// default loopback network) and is also where the carrier's calls come from. Over UDP anyone can
/// send from that address, so the guesses must not ban it: the account locks instead and the
/// carrier's calls keep flowing (issue 19, item 6).
#[test]
fn password_guessing_from_a_trusted_address_locks_the_account_and_bans_nobody() {
    let node = Node::start(38100, "");
    let _pbx = uas(&scenario("uas_rr.xml"), 38111, false);
    node.apply(&TrunkFile::new("carrier", "3810", (38111, 38111)).limit(50).mode("only-primary").toml());
    node.apply(
        "id = \"office\"\nnumbers = [\"3811\"]\nmax_concurrent_calls = 5\nmode = \"only-primary\"\n\
         [primary]\nauth = \"digest\"\nusername = \"pbx-office\"\npassword = \"correct-horse-battery\"\n",
    );
    // 60 guesses (the per-source limit is 10 a minute, the per-account one 30)
    let out = std::process::Command::new("timeout")
        .args(["120", "svcrack", "-u", "pbx-office", "-r", "1-60", "-b", "127.0.0.1", "-x", "127.0.0.1", "-P", "38120"])
        .args(["-p", &node.sip.to_string(), "127.0.0.1"])
        .output()
        .expect("run svcrack");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("correct-horse"), "svcrack cannot have found the password:\n{said}");
    let log = node.log();
    assert!(log.matches("digest authentication failed").count() >= 30, "svcrack's guesses reached the node:\n{said}\n{log}");
    assert!(log.contains("account locked after failed authentications"), "the account locks:\n{log}");
    assert!(!log.contains("source banned"), "a trusted source is never banned:\n{log}");
    // the carrier, on the same address, still gets its calls through
    let calls = Uac::new(&scenario("uac_rr.xml"), &node, 38121, "3810").calls(5).rate(10).run();
    assert_eq!(calls, Calls { ok: 5, failed: 0 });
    let metrics = node.http_get("/metrics");
    let bans = metrics.lines().find(|l| l.starts_with("hatrunk_guard_bans_total")).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(bans, Some("0"), "no ban:\n{metrics}");
}

//! Digest accounts (registrar, expiry) and outbound calls with the Primary's caller ID, end to end.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn register(node: &Node, local_port: u16, user: &str, pass: &str, expires: u32, contact_port: u16) -> bool {
    Command::new("timeout")
        .arg("30")
        .arg("sipp")
        .arg("-sf")
        .arg(scenario("pbx_register.xml"))
        .args(["-i", "127.0.0.1", "-p", &local_port.to_string()])
        .arg(format!("127.0.0.1:{}", node.sip))
        .args(["-m", "1", "-nostdin"])
        .args([
            "-au",
            user,
            "-ap",
            pass,
            "-key",
            "user",
            user,
            "-key",
            "expires",
            &expires.to_string(),
            "-key",
            "contact_port",
            &contact_port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

const DIGEST_TRUNK: &str = "id = \"dg\"\nnumbers = [\"3400\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\n\
[primary]\nauth = \"digest\"\nusername = \"pbx-hq\"\npassword = \"correct-horse\"\n\
[secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:34012\"\nallowed_ips = [\"127.0.0.9/32\"]\n";

#[test]
fn digest_pbx_registers_and_receives_calls_then_its_expired_binding_gives_480() {
    let node = Node::start_with(34000, "min_expires_s = 1", "");
    node.apply(DIGEST_TRUNK);
    let _pbx = uas(&scenario("uas_rr.xml"), 34011, false);
    let _dr = uas(&scenario("uas_rr.xml"), 34012, false);
    assert!(!register(&node, 34030, "pbx-hq", "wrong-password", 3, 34011), "a wrong password must not register");
    assert!(register(&node, 34030, "pbx-hq", "correct-horse", 3, 34011), "register failed:\n{}", node.log());
    let out = node.cli(&["trunk", "get", "dg", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["state"]["primary"]["registered"].as_str().is_some_and(|c| c.contains("34011")), "{v}");
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 34020, "3400").calls(3).rate(10).run();
    assert_eq!(r, Calls { ok: 3, failed: 0 });
    assert_eq!(answered_by(&node.wait_cdrs(|c| c["trunk"] == "dg", 3)), (3, 0));
    // the binding expires after 3 s: 480, USER_NOT_REGISTERED, and no failover under `current`
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let dir = tempfile::tempdir().expect("tmp");
    let r = Uac::new(&with_code(dir.path(), "uac_expect.xml", 480), &node, 34021, "3400").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 });
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "dg", 4);
    let last = cdrs.last().expect("cdr");
    assert_eq!(last["cause"], "USER_NOT_REGISTERED", "{last}");
    assert_eq!(last["failover"], false);
}

#[test]
fn outbound_from_the_secondary_pbx_carries_the_primarys_caller_id() {
    let node = Node::start(34100, "[upstream]\ntarget = \"sip:127.0.0.1:34111\"\n");
    let trunk = "id = \"ob\"\nnumbers = [\"3410\"]\nmax_concurrent_calls = 2\nmode = \"auto-failover\"\n\
        [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.2:34112\"\nallowed_ips = [\"127.0.0.2/32\"]\ncaller_id = \"+6561230000\"\n\
        [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.3:34113\"\nallowed_ips = [\"127.0.0.3/32\"]\n";
    node.apply(trunk);
    let trace = node.dir.path().join("carrier.msg");
    let carrier = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("uas_rr.xml"))
        .args(["-i", "127.0.0.1", "-p", "34111", "-nostdin", "-trace_msg", "-message_file"])
        .arg(&trace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("carrier");
    let _carrier = Sipp::from(carrier);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // the Secondary's PBX (127.0.0.3) calls a number outside the trunk
    let r = Uac::new(&scenario("uac_rr.xml"), &node, 34120, "6598765432").source_ip("127.0.0.3").calls(2).rate(10).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 });
    let seen = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(seen.contains("INVITE sip:6598765432@127.0.0.1:34111"), "carrier saw:\n{seen}");
    assert!(seen.contains("P-Asserted-Identity: <sip:+6561230000@"), "carrier saw:\n{seen}");
    let cdrs = node.wait_cdrs(|c| c["trunk"] == "ob", 2);
    assert!(cdrs.iter().all(|c| c["direction"] == "outbound" && c["attempts"][0]["account"] == "secondary"), "{cdrs:?}");
    // an address in no whitelist is not carried (no Digest account exists to challenge for: 404)
    let dir = tempfile::tempdir().expect("tmp");
    let r =
        Uac::new(&with_code(dir.path(), "uac_expect.xml", 404), &node, 34121, "6598765432").source_ip("127.0.0.4").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 });
}

/// SIPp only speaks MD5 digest; SHA-256 (RFC 7616) and a stale nonce are checked with hand-made
/// REGISTERs over a real socket.
#[test]
fn sha256_digest_registration_and_stale_nonces() {
    use sha2::{Digest, Sha256};
    let node = Node::start_with(34200, "nonce_lifetime_s = 2", "");
    node.apply(&DIGEST_TRUNK.replace("3400", "3420").replace("pbx-hq", "pbx-sha").replace("\"dg\"", "\"dg2\""));
    let sock = std::net::UdpSocket::bind("127.0.0.1:34230").expect("bind");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(3))).expect("timeout");
    let send = |cseq: u32, auth: &str| -> String {
        let msg = format!(
            "REGISTER sip:127.0.0.1:34200 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:34230;branch=z9hG4bKsha{cseq}\r\n\
             From: <sip:pbx-sha@127.0.0.1>;tag=s1\r\nTo: <sip:pbx-sha@127.0.0.1>\r\nCall-ID: sha-reg\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:pbx-sha@127.0.0.1:34231>\r\nExpires: 600\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), "127.0.0.1:34200").expect("send");
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).expect("reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let h = |s: String| hex(&Sha256::digest(s.as_bytes()));
    let first = send(1, "");
    assert!(first.starts_with("SIP/2.0 401"), "{first}");
    let nonce = first.split("nonce=\"").nth(1).and_then(|r| r.split('"').next()).expect("nonce").to_string();
    let ha1 = h("pbx-sha:hatrunk:correct-horse".into());
    let ha2 = h("REGISTER:sip:127.0.0.1:34200".into());
    let auth = |nonce: &str, ha1: &str| {
        let resp = h(format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
        format!(
            "Authorization: Digest username=\"pbx-sha\", realm=\"hatrunk\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1:34200\", \
             response=\"{resp}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
        )
    };
    let ok = send(2, &auth(&nonce, &ha1));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("expires=600"), "{ok}");
    let wrong = send(3, &auth(&nonce, &h("pbx-sha:hatrunk:guess".into())));
    assert!(wrong.starts_with("SIP/2.0 401"), "a wrong password is challenged again: {wrong}");
    // a forged nonce is challenged afresh; an expired one of ours with stale=true (no password prompt)
    let (ts, mac) = nonce.split_once('.').expect("nonce shape");
    let forged = format!("{:x}.{mac}", u64::from_str_radix(ts, 16).expect("hex") + 1);
    let r = send(4, &auth(&forged, &ha1));
    assert!(r.starts_with("SIP/2.0 401") && !r.contains("stale=true"), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = send(5, &auth(&nonce, &ha1));
    assert!(r.starts_with("SIP/2.0 401") && r.contains("stale=true"), "{r}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

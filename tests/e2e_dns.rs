//! PBX targets by name (RFC 3263), end to end: a real DNS server (Debian's dnsmasq on a loopback
//! port) serves a PBX name with two SRV targets, SIPp plays the PBXes, and a real node resolves,
//! fails over between the targets of one account, picks up a changed record after its TTL, goes
//! on from its stale answer while the DNS server is down, and treats a name that does not exist as
//! an unreachable account at once.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BASE: u16 = 37100;
const DNS: u16 = BASE + 53;
const P1: u16 = BASE + 11;
const P2: u16 = BASE + 12;
const SECONDARY: u16 = BASE + 13;

/// dnsmasq answering for `hatrunk.test` only (NXDOMAIN for any other name in it), TTL 2 s.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(records: &[String]) -> Dnsmasq {
        Dnsmasq::on(DNS, 2, records)
    }

    /// dnsmasq on 127.0.0.1:`port`, answering for `hatrunk.test` with `records` (TTL `ttl_s`).
    fn on(port: u16, ttl_s: u32, records: &[String]) -> Dnsmasq {
        let ok = Command::new("dnsmasq").arg("--version").stdout(Stdio::null()).status().is_ok();
        assert!(ok, "dnsmasq is not installed: run the README's test command (it installs dnsmasq-base)");
        let mut c = Command::new("dnsmasq");
        c.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", &format!("--port={port}"), "--user=root", "--pid-file="])
            .args(["--local=/hatrunk.test/", &format!("--local-ttl={ttl_s}"), "--log-queries", "--log-facility=-"])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("spawn dnsmasq");
        std::thread::sleep(Duration::from_millis(300));
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn srv(port: u16, target: &str, priority: u16) -> String {
    format!("--srv-host=_sip._udp.pbx.hatrunk.test,{target}.hatrunk.test,{port},{priority},1")
}

fn host(name: &str) -> String {
    format!("--host-record={name}.hatrunk.test,127.0.0.1")
}

fn trunk(id: &str, number: &str, primary: &str) -> String {
    format!(
        "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\nfailover_timeout_ms = 2000\n\
         [primary]\nauth = \"ip\"\ntarget = \"{primary}\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:sec.hatrunk.test:{SECONDARY}\"\nallowed_ips = [\"127.0.0.9/32\"]\n"
    )
}

fn wait_log(node: &Node, what: &str) {
    let t0 = Instant::now();
    while !node.log().contains(what) {
        assert!(t0.elapsed() < Duration::from_secs(15), "no {what:?} in the node log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One call to `number`; its CDR once written (the `nth` of the trunk's).
fn call(node: &Node, number: &str, trunk: &str, nth: usize) -> serde_json::Value {
    let r = Uac::new(&scenario("uac_rr.xml"), node, BASE + 20, number).calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "call {nth} of {trunk}:\n{}", node.log());
    let cdrs = node.wait_cdrs(|c| c["trunk"] == trunk, nth);
    cdrs.get(nth - 1).cloned().unwrap_or_else(|| panic!("no CDR {nth} of {trunk}"))
}

/// Where each attempt went (`sip:NUMBER@ADDR`), and its code.
fn attempts(cdr: &serde_json::Value) -> Vec<(String, String, u64)> {
    cdr["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let target = a["target"].as_str().unwrap_or("").to_string();
            (a["account"].as_str().unwrap_or("").to_string(), target, a["code"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn to(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn srv_targets_fail_over_within_the_account_follow_ttls_and_survive_a_dns_outage() {
    require_sipp();
    let dir = tempfile::tempdir().expect("tmp");
    let first = [srv(P1, "pbx1", 10), srv(P2, "pbx2", 20), host("pbx1"), host("pbx2"), host("sec")];
    let dns = Dnsmasq::start(&first);
    let node = Node::start(BASE, &format!("[dns]\nservers = [\"127.0.0.1:{DNS}\"]\ntimeout_ms = 500\n"));
    let failing = uas(&with_code(dir.path(), "uas_fail.xml", 503), P1, false);
    let mut second = Some(uas(&scenario("uas_rr.xml"), P2, false));
    let _secondary = uas(&scenario("uas_rr.xml"), SECONDARY, false);

    node.apply(&trunk("named", "3660", "sip:pbx.hatrunk.test"));
    wait_log(&node, "host=pbx.hatrunk.test");
    wait_log(&node, "host=sec.hatrunk.test");

    // the first target (priority 10) says 503: the second target of the same account takes it
    let cdr = call(&node, "3660", "named", 1);
    let a = attempts(&cdr);
    assert_eq!(a.len(), 2, "{cdr}");
    assert!(a[0].0 == "primary" && a[0].1.contains(&to(P1)) && a[0].2 == 503, "{cdr}");
    assert!(a[1].0 == "primary" && a[1].1.contains(&to(P2)) && a[1].2 == 200, "{cdr}");
    assert_eq!(cdr["failover"], false, "the Secondary was not needed: {cdr}");

    // both targets down: then the Secondary (reached by name and port: an A record)
    drop(second.take());
    let cdr = call(&node, "3660", "named", 2);
    let a = attempts(&cdr);
    assert_eq!(a.last().map(|x| (x.0.as_str(), x.1.contains(&to(SECONDARY)))), Some(("secondary", true)), "{cdr}");
    assert_eq!(a.iter().filter(|x| x.0 == "primary").count(), 2, "both Primary targets tried first: {cdr}");

    // a name that does not exist: its account is unreachable at once, said once in the log
    node.apply(&trunk("gone", "3661", "sip:nothere.hatrunk.test"));
    wait_log(&node, "host=nothere.hatrunk.test");
    let cdr = call(&node, "3661", "gone", 1);
    assert_eq!(attempts(&cdr).last().map(|x| x.0.clone()), Some("secondary".into()), "{cdr}");
    assert!(node.log().contains("DNS: name unusable"), "{}", node.log());

    // the record changes: only the second target, at priority 10. After the TTL (2 s) the node
    // asks again and goes straight there
    drop(dns);
    let dns = Dnsmasq::start(&[srv(P2, "pbx2", 10), host("pbx2"), host("sec")]);
    second = Some(uas(&scenario("uas_rr.xml"), P2, false));
    std::thread::sleep(Duration::from_secs(4));
    let cdr = call(&node, "3660", "named", 3);
    let a = attempts(&cdr);
    assert_eq!(a.len(), 1, "the new record, without the failing target: {cdr}");
    assert!(a[0].1.contains(&to(P2)) && a[0].2 == 200, "{cdr}");

    // the DNS server goes away: past the TTL the last answer is still used (RFC 8767)
    drop(dns);
    std::thread::sleep(Duration::from_secs(4));
    let cdr = call(&node, "3660", "named", 4);
    let a = attempts(&cdr);
    assert!(a.len() == 1 && a[0].1.contains(&to(P2)) && a[0].2 == 200, "served stale: {cdr}");
    wait_log(&node, "DNS: no answer; calls use the last one");
    drop((failing, second));
}

/// `openssl s_server` as a PBX reached over TLS, presenting `cert` (its received bytes in a file).
struct TlsPbx(Child, std::path::PathBuf);

impl TlsPbx {
    fn start(dir: &std::path::Path, cert: &str, port: u16) -> TlsPbx {
        let out = dir.join(format!("s_server-{port}.out"));
        let file = std::fs::File::create(&out).expect("s_server output");
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(dir.join(format!("{cert}.pem")))
            .arg("-key")
            .arg(dir.join(format!("{cert}.key")))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl (the test command installs it)");
        std::thread::sleep(Duration::from_millis(300));
        TlsPbx(child, out)
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for TlsPbx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn certs(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(hatrunk_bin()).arg("certs").args(args).arg("--dir").arg(dir).output().expect("hatrunk certs");
    assert!(out.status.success(), "hatrunk certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A `sips:` target by name: the TLS handshake sends the name (SNI) and the certificate must carry
/// it. A PBX whose certificate names another host is refused and the call fails over; the one
/// whose certificate names it gets the INVITE, its Request-URI naming it too.
#[test]
fn a_tls_target_by_name_is_verified_against_its_name() {
    require_sipp();
    let base = 37200u16;
    let (dns_port, right, wrong, secondary) = (base + 53, base + 11, base + 12, base + 13);
    let pki = tempfile::tempdir().expect("tmp");
    certs(pki.path(), &["init", "--nodes", "sbc", "--san", "sbc.hatrunk.test"]);
    certs(pki.path(), &["issue", "other", "--san", "other.hatrunk.test"]);
    let _dns = Dnsmasq::on(dns_port, 60, &[host("sbc"), host("wrong"), host("sec")]);
    let ca = pki.path().join("ca.pem");
    let sip = format!("tls_ca = \"{}\"\n", ca.display());
    let node = Node::start_with(base, &sip, &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n"));
    let good = TlsPbx::start(pki.path(), "sbc", right);
    let bad = TlsPbx::start(pki.path(), "other", wrong);
    let _s = uas(&scenario("uas_rr.xml"), secondary, false);
    let tls_trunk = |id: &str, number: &str, target: &str| {
        format!(
            "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = 2\nmode = \"auto-failover\"\nfailover_timeout_ms = 2000\n\
             [primary]\nauth = \"ip\"\ntarget = \"{target}\"\ntransport = \"tls\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
             [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{secondary}\"\nallowed_ips = [\"127.0.0.9/32\"]\n"
        )
    };
    node.apply(&tls_trunk("tlswrong", "3670", &format!("sips:wrong.hatrunk.test:{wrong}")));
    node.apply(&tls_trunk("tlsname", "3671", &format!("sips:sbc.hatrunk.test:{right}")));
    wait_log(&node, "host=wrong.hatrunk.test");
    wait_log(&node, "host=sbc.hatrunk.test");
    std::thread::sleep(Duration::from_millis(600)); // the names reach the transports within 250 ms

    // the certificate names other.hatrunk.test: refused, the Secondary takes the call
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 20, "3670").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "{}", node.log());
    let cdr = node.wait_cdrs(|c| c["trunk"] == "tlswrong", 1);
    assert_eq!(attempts(&cdr[0]).last().map(|a| a.0.clone()), Some("secondary".into()), "{}", cdr[0]);
    assert!(!bad.received().contains("INVITE"), "a PBX with another name's certificate got the call: {}", bad.received());

    // the certificate names sbc.hatrunk.test: the INVITE goes through
    let sock = std::net::UdpSocket::bind(("127.0.0.1", base + 21)).expect("bind");
    let invite = format!(
        "INVITE sip:3671@127.0.0.1:{base} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKtlsname1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=c1\r\nTo: <sip:3671@127.0.0.1>\r\nCall-ID: tls-by-name-1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:carrier@127.0.0.1:{}>\r\nContent-Length: 0\r\n\r\n",
        base + 21,
        base + 21
    );
    sock.send_to(invite.as_bytes(), ("127.0.0.1", base)).expect("send");
    let t0 = Instant::now();
    while !good.received().contains("INVITE sip:3671@sbc.hatrunk.test") {
        assert!(t0.elapsed() < Duration::from_secs(10), "no INVITE over TLS by name; got {:?}\n{}", good.received(), node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `allowed_ips` naming a host: the PBX at the address the name resolves to calls out through
/// its account, to an upstream carrier given by name too; another address does not; once the
/// record moves, the old address no longer does.
#[test]
fn an_allowed_host_name_lets_its_addresses_call_out_to_an_upstream_by_name() {
    require_sipp();
    let base = 37700u16;
    let (dns_port, carrier) = (base + 53, base + 11);
    let records = |addr: &str| {
        Dnsmasq::on(
            dns_port,
            1,
            &[format!("--host-record=office.hatrunk.test,{addr}"), "--host-record=carrier.hatrunk.test,127.0.0.1".into()],
        )
    };
    let dns = records("127.0.0.3");
    let node = Node::start(
        base,
        &format!(
            "[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\ntimeout_ms = 500\n[upstream]\ntarget = \"sip:carrier.hatrunk.test:{carrier}\"\n"
        ),
    );
    let _carrier = uas(&scenario("uas_rr.xml"), carrier, false);
    node.apply(
        "id = \"office\"\nnumbers = [\"3770\"]\nmax_concurrent_calls = 2\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:37712\"\nallowed_ips = [\"office.hatrunk.test\"]\n",
    );
    let shown = node.cli(&["trunk", "get", "office", "-o", "json"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("office.hatrunk.test"), "trunk get shows the name as written");
    wait_log(&node, "host=office.hatrunk.test");
    // give the node's index a pass after the answer
    std::thread::sleep(Duration::from_millis(1500));
    let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 20, "6598765432").source_ip("127.0.0.3").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "the named host's address calls out:\n{}", node.log());
    let cdr = &node.wait_cdrs(|c| c["trunk"] == "office", 1)[0];
    assert_eq!(cdr["attempts"][0]["target"], format!("sip:6598765432@127.0.0.1:{carrier}"), "the carrier's resolved address: {cdr}");
    let dir = tempfile::tempdir().expect("tmp");
    let refused = with_code(dir.path(), "uac_expect.xml", 404);
    let r = Uac::new(&refused, &node, base + 21, "6598765432").source_ip("127.0.0.4").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "another address gets 404");
    // the record moves to 127.0.0.4: after its TTL, that address is the office's, 127.0.0.3 is not
    drop(dns);
    let _dns = records("127.0.0.4");
    let t0 = Instant::now();
    loop {
        let r = Uac::new(&scenario("uac_rr.xml"), &node, base + 22, "6598765432").source_ip("127.0.0.4").calls(1).rate(1).run();
        if r.ok == 1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "the moved record was never picked up:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = Uac::new(&refused, &node, base + 23, "6598765432").source_ip("127.0.0.3").calls(1).rate(1).run();
    assert_eq!(r, Calls { ok: 1, failed: 0 }, "the old address gets 404");
}

/// IPv6 by name: a PBX whose name has only an AAAA record (`::1`), reached from a node listening
/// on `[::1]`; the CDR names the address in brackets.
#[test]
fn a_pbx_name_with_only_an_aaaa_record_is_reached_over_ipv6() {
    require_sipp();
    let base = 37660u16;
    let (dns_port, pbx, caller) = (base + 19, base + 11, base + 15);
    let _dns = Dnsmasq::on(dns_port, 60, &["--host-record=pbx6.hatrunk.test,::1".to_string()]);
    let sip = format!("listen = [\"udp:[::1]:{base}\", \"tcp:[::1]:{base}\"]");
    let mut node = Node::start_sip_listen(base, &sip, &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\ntimeout_ms = 500\n"));
    node.host = "[::1]".into();
    let _pbx = uas_on("::1", &scenario("uas_rr.xml"), pbx, false);
    node.apply(&format!(
        "id = \"v6name\"\nnumbers = [\"3766\"]\nmax_concurrent_calls = 5\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:pbx6.hatrunk.test:{pbx}\"\nallowed_ips = [\"::1/128\"]\n"
    ));
    wait_log(&node, "host=pbx6.hatrunk.test");
    let r = Uac::new(&scenario("uac_rr.xml"), &node, caller, "3766").source_ip("::1").calls(2).rate(5).run();
    assert_eq!(r, Calls { ok: 2, failed: 0 }, "{}", node.log());
    for c in node.wait_cdrs(|c| c["trunk"] == "v6name", 2) {
        assert_eq!(c["attempts"][0]["target"], format!("sip:3766@[::1]:{pbx}"), "{c}");
    }
}

//! A call over SIP/TLS end to end with TLS implementations that are not ours: OpenSSL's `s_client`
//! is the carrier, dialling the node's `tls:` listener (and verifying its certificate), and
//! OpenSSL's `s_server` is the PBX, reached over TLS because its account says `transport = "tls"`
//! (the node verifies it against the private CA in `sip.tls_ca`). The test speaks SIP through them.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// An `openssl` process whose stdin we write SIP to and whose stdout we read SIP from.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    /// Bytes of `out` already taken as messages.
    seen: usize,
    what: &'static str,
}

impl Peer {
    fn spawn(what: &'static str, args: &[String]) -> Peer {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl (the test command installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Peer { child, stdin, out, seen: 0, what }
    }

    fn send(&mut self, msg: &str) {
        let wire = msg.replace('\n', "\r\n");
        self.stdin.write_all(wire.as_bytes()).expect("write to openssl");
        self.stdin.flush().expect("flush");
    }

    /// The next message whose first line starts with `start`, skipping others (100 Trying...).
    fn wait(&mut self, start: &str) -> String {
        let t0 = Instant::now();
        loop {
            while let Some(m) = self.next_message() {
                if m.starts_with(start) {
                    return m;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{}: no {start:?} within 10 s; got {:?}", self.what, self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    fn next_message(&mut self) -> Option<String> {
        let all = self.out.lock().expect("lock").clone();
        let rest = &all[self.seen..];
        let skip = rest.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        let rest = &rest[skip..];
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let len: usize = header(&head, "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let total = head_end + 4 + len;
        if rest.len() < total {
            return None;
        }
        self.seen += skip + total;
        Some(head)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    all(msg, name).into_iter().next()
}

fn all<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines().filter_map(|l| l.split_once(':')).filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()).collect()
}

/// A response to `req` from the PBX: its Via, Record-Route, From, To (with our tag), Call-ID, CSeq.
fn answer(req: &str, status: &str, contact: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\n");
    for v in all(req, "Via") {
        r.push_str(&format!("Via: {v}\n"));
    }
    for rr in all(req, "Record-Route") {
        r.push_str(&format!("Record-Route: {rr}\n"));
    }
    let to = header(req, "To").expect("To");
    let to = if to.contains("tag=") { to.to_string() } else { format!("{to};tag=pbx1") };
    r.push_str(&format!(
        "From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\nContact: {contact}\nContent-Length: 0\n\n",
        header(req, "From").expect("From"),
        header(req, "Call-ID").expect("Call-ID"),
        header(req, "CSeq").expect("CSeq")
    ));
    r
}

fn pem(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A trunk whose Primary is the TLS PBX on `pbx_port` (the Secondary, never reached, on +2).
fn tls_trunk(id: &str, number: &str, pbx_port: u16) -> String {
    format!(
        "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = 2\nmode = \"only-primary\"\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{pbx_port}\"\ntransport = \"tls\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:127.0.0.1:{}\"\nallowed_ips = [\"127.0.0.9/32\"]\n",
        pbx_port + 2
    )
}

/// OpenSSL's `s_server` as a PBX on `port`, presenting `pbx.pem` from `dir`, given time to listen.
fn tls_pbx(dir: &Path, port: u16) -> Peer {
    let args = ["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), "-cert", &pem(dir, "pbx.pem"), "-key", &pem(dir, "pbx.key")];
    let pbx = Peer::spawn("pbx (s_server)", &args.map(String::from));
    std::thread::sleep(Duration::from_millis(300));
    pbx
}

#[test]
fn a_call_over_tls_with_openssl_at_both_ends() {
    require_sipp();
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = pki.path().join("ca");
    make_certs(&ca, "sip,pbx");
    let (base, pbx_port, caller_port) = (35300u16, 35311u16, 35312u16);
    let tls_port = base + 5;
    let sip = format!(
        "listen = [\"udp:127.0.0.1:{base}\", \"tcp:127.0.0.1:{base}\", \"tls:127.0.0.1:{tls_port}\"]\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
        pem(&ca, "sip.pem"),
        pem(&ca, "sip.key"),
        pem(&ca, "ca.pem")
    );
    let node = Node::start_sip_listen(base, &sip, "");
    node.apply(&tls_trunk("tls", "6560001000", pbx_port));

    let mut pbx = tls_pbx(&ca, pbx_port);
    let mut caller = Peer::spawn(
        "carrier (s_client)",
        &[
            "s_client".into(),
            "-quiet".into(),
            "-connect".into(),
            format!("127.0.0.1:{tls_port}"),
            "-CAfile".into(),
            pem(&ca, "ca.pem"),
            "-verify_ip".into(),
            "127.0.0.1".into(),
            "-verify_return_error".into(),
        ],
    );
    let cid = "tls-call-1";
    let me = format!("127.0.0.1:{caller_port}");
    caller.send(&format!(
        "INVITE sip:6560001000@127.0.0.1:{tls_port};transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS {me};branch=z9hG4bKtlsinv1;rport\nMax-Forwards: 70\n\
         From: <sip:carrier@127.0.0.1>;tag=c1\nTo: <sip:6560001000@127.0.0.1>\nCall-ID: {cid}\nCSeq: 1 INVITE\n\
         Contact: <sip:carrier@{me};transport=tls>\nContent-Length: 0\n\n"
    ));

    // the PBX gets the INVITE over TLS, through a Record-Route that says tls
    let invite = pbx.wait("INVITE ");
    let rr = all(&invite, "Record-Route");
    assert!(rr.iter().any(|r| r.contains("transport=tls")), "Record-Route should name TLS: {invite}");
    assert!(header(&invite, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TLS")), "{invite}");
    pbx.send(&answer(&invite, "200 OK", &format!("<sip:pbx@127.0.0.1:{pbx_port};transport=tls>")));

    let ok = caller.wait("SIP/2.0 200");
    assert!(header(&ok, "CSeq").is_some_and(|c| c.ends_with("INVITE")), "{ok}");
    let to = header(&ok, "To").expect("To").to_string();
    let route: Vec<String> = all(&ok, "Record-Route").into_iter().rev().map(str::to_string).collect();
    let routes: String = route.iter().map(|r| format!("Route: {r}\n")).collect();
    let target = format!("sip:pbx@127.0.0.1:{pbx_port};transport=tls");
    caller.send(&format!(
        "ACK {target} SIP/2.0\nVia: SIP/2.0/TLS {me};branch=z9hG4bKtlsack1;rport\nMax-Forwards: 70\n{routes}\
         From: <sip:carrier@127.0.0.1>;tag=c1\nTo: {to}\nCall-ID: {cid}\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    ));
    let ack = pbx.wait("ACK ");
    assert_eq!(header(&ack, "Call-ID"), Some(cid));

    caller.send(&format!(
        "BYE {target} SIP/2.0\nVia: SIP/2.0/TLS {me};branch=z9hG4bKtlsbye1;rport\nMax-Forwards: 70\n{routes}\
         From: <sip:carrier@127.0.0.1>;tag=c1\nTo: {to}\nCall-ID: {cid}\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    ));
    let bye = pbx.wait("BYE ");
    pbx.send(&answer(&bye, "200 OK", &format!("<sip:pbx@127.0.0.1:{pbx_port};transport=tls>")));
    let bye_ok = caller.wait("SIP/2.0 200");
    assert!(header(&bye_ok, "CSeq").is_some_and(|c| c.ends_with("BYE")), "{bye_ok}");

    let cdrs = node.wait_cdrs(|c| c["call_id"] == cid, 1);
    assert_eq!(cdrs.len(), 1, "{}", node.log());
    assert_eq!(cdrs[0]["disposition"], "ANSWERED", "{:?}", cdrs[0]);
    assert_eq!(node.settled_in_use("tls", 0), 0);
}

#[test]
fn a_pbx_whose_certificate_is_not_trusted_is_not_called() {
    require_sipp();
    let pki = tempfile::tempdir().expect("tempdir");
    let ours = pki.path().join("ours");
    let theirs = pki.path().join("theirs");
    make_certs(&ours, "sip");
    make_certs(&theirs, "pbx");
    let (base, pbx_port) = (35400u16, 35411u16);
    let sip = format!(
        "listen = [\"udp:127.0.0.1:{base}\", \"tcp:127.0.0.1:{base}\"]\ntls_ca = \"{}\"\n",
        pem(&ours, "ca.pem") // trusts our CA only; the PBX's certificate is from another
    );
    let node = Node::start_sip_listen(base, &sip, "");
    node.apply(&tls_trunk("tlsbad", "6560002000", pbx_port));
    let mut pbx = tls_pbx(&theirs, pbx_port);
    // the carrier calls over UDP; the INVITE must not reach the untrusted PBX and the call fails
    let t0 = Instant::now();
    let final_status = call(base, 35412, "6560002000", "badtls-1");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(final_status >= 400, "the call should fail, got {final_status}");
    assert!(pbx.next_message().is_none(), "the untrusted PBX received SIP: {}", pbx.text());
    assert_eq!(node.settled_in_use("tlsbad", 0), 0);
}

/// A self-signed certificate for a PBX, made by OpenSSL, and its SHA-256 fingerprint as OpenSSL
/// prints it (what an operator pastes into `tls_pin`).
fn self_signed_pbx(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=pbx", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", &pem(dir, "pbx.key"), "-out", &pem(dir, "pbx.pem")])
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &pem(dir, "pbx.pem")])
        .output()
        .expect("openssl x509");
    String::from_utf8_lossy(&fp.stdout).trim().to_string()
}

/// One call from a carrier over UDP; the final status it gets.
fn call(base: u16, me: u16, number: &str, call_id: &str) -> u16 {
    let sock = std::net::UdpSocket::bind(("127.0.0.1", me)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let invite = format!(
        "INVITE sip:{number}@127.0.0.1:{base} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=c1\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:carrier@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), ("127.0.0.1", base)).expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a response within 10 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 200 {
            return code;
        }
    }
}

/// A PBX whose certificate no CA of the node vouches for is called when its account pins that
/// certificate, and only then: the same certificate on an account pinning another is refused.
#[test]
fn a_self_signed_pbx_is_called_by_its_pin_and_only_with_the_right_one() {
    require_sipp();
    let pki = tempfile::tempdir().expect("tempdir");
    let ours = pki.path().join("ours");
    make_certs(&ours, "sip");
    let fingerprint = self_signed_pbx(&pki.path().join("pbx"));
    assert!(fingerprint.contains('='), "openssl printed {fingerprint:?}");
    let (base, good_port, bad_port) = (35200u16, 35211u16, 35221u16);
    let sip = format!("listen = [\"udp:127.0.0.1:{base}\", \"tcp:127.0.0.1:{base}\"]\ntls_ca = \"{}\"\n", pem(&ours, "ca.pem"));
    let node = Node::start_sip_listen(base, &sip, "");
    let pinned = |id: &str, number: &str, port: u16, pin: &str| {
        tls_trunk(id, number, port).replace("transport = \"tls\"\n", &format!("transport = \"tls\"\ntls_pin = [{pin:?}]\n"))
    };
    node.apply(&pinned("pinned", "6560003000", good_port, &fingerprint));
    node.apply(&pinned("wrongpin", "6560004000", bad_port, &"00".repeat(32)));
    let mut good = tls_pbx(&pki.path().join("pbx"), good_port);
    let mut bad = tls_pbx(&pki.path().join("pbx"), bad_port);
    // pins reach the transport on the node's next one-second tick: the first call may come before it
    let mut got = None;
    for i in 0..5 {
        let carrier = std::thread::spawn(move || call(base, 35212, "6560003000", &format!("pinned-{i}")));
        let t0 = Instant::now();
        while got.is_none() && t0.elapsed() < Duration::from_secs(3) {
            got = std::iter::from_fn(|| good.next_message()).find(|m| m.starts_with("INVITE"));
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(invite) = &got {
            good.send(&answer(invite, "486 Busy Here", &format!("<sip:pbx@127.0.0.1:{good_port};transport=tls>")));
            assert_eq!(carrier.join().expect("carrier"), 486, "the PBX's answer reaches the carrier");
            break;
        }
        carrier.join().expect("carrier");
    }
    assert!(got.is_some(), "the pinned PBX was never called: {}", node.log());
    // the wrong pin: the same certificate is refused, nothing reaches that PBX
    let status = call(base, 35222, "6560004000", "wrongpin-1");
    assert!(status >= 400, "the call should fail, got {status}");
    assert!(bad.next_message().is_none(), "the PBX behind a wrong pin received SIP: {}", bad.text());
}

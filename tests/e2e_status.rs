//! The status page in a real browser (Debian's headless Chromium) against a 3-node cluster on
//! loopback: it shows every member up, then a killed node down (the API says so within 2 s, the
//! page polls it every second), and the calls in progress per node; a screenshot is kept in
//! `target/test-artifacts/status.png`. And the page and its API need the admin token when the
//! node has one.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Chromium, headless, on a fresh profile, with nothing of its own on the network.
fn chromium(args: &[&str], url: &str) -> String {
    let bin =
        ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let bin = bin.expect("Chromium is not installed: run the README's test command (it installs Debian's chromium)");
    let profile = tempfile::tempdir().expect("profile");
    let out = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM once its first polls have run.
fn page(url: &str) -> String {
    chromium(&["--dump-dom", "--virtual-time-budget=4000"], url)
}

fn members(node: &Node) -> serde_json::Value {
    let resp = node.http_get("/api/v1/members");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_default()
}

fn state_of(v: &serde_json::Value, name: &str) -> String {
    v["members"].as_array().into_iter().flatten().find(|m| m["name"] == name).map(|m| m["state"].to_string()).unwrap_or_default()
}

#[test]
fn the_page_shows_a_killed_node_down_and_the_calls_per_node() {
    let n1 = Node::member(39800, 1, true);
    let n2 = Node::member(39810, 2, false);
    let mut n3 = Node::member(39820, 3, false);
    join(&n1, &n2);
    join(&n1, &n3);
    let _pbx = uas(&scenario("uas_rr.xml"), 39831, false);
    n1.apply(&TrunkFile::new("shown", "3980", (39831, 39832)).limit(20).toml());
    let url = format!("http://127.0.0.1:{}/", n1.admin + 1);
    let t0 = Instant::now();
    while ["n1", "n2", "n3"].iter().any(|n| state_of(&members(&n1), n) != "\"up\"") {
        assert!(t0.elapsed() < Duration::from_secs(15), "not every member up: {}", members(&n1));
        std::thread::sleep(Duration::from_millis(200));
    }
    let dom = page(&url);
    for n in ["n1", "n2", "n3"] {
        assert!(dom.contains(&format!("data-member=\"{n}\" data-state=\"up\"")), "{n} shown up:\n{dom}");
    }
    // calls held up on node 1 while node 3 is killed
    std::thread::scope(|s| {
        let calls = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n1, 39840, "3980").calls(3).rate(10).hold_ms(9000).run());
        std::thread::sleep(Duration::from_millis(1500));
        n3.kill();
        let killed = Instant::now();
        while state_of(&members(&n1), "n3") != "\"down\"" {
            assert!(killed.elapsed() < Duration::from_secs(2), "node 3 not down after 2 s: {}", members(&n1));
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("status: node 3 down in the API {} ms after the kill; the page polls every second", killed.elapsed().as_millis());
        let dom = page(&url);
        assert!(dom.contains("data-member=\"n3\" data-state=\"down\""), "node 3 shown down:\n{dom}");
        assert!(dom.contains("data-member=\"n1\" data-state=\"up\""), "node 1 shown up:\n{dom}");
        assert!(dom.contains("data-trunk=\"shown\" data-in-use=\"3\""), "the 3 calls in progress on the trunk:\n{dom}");
        assert!(dom.contains("n1 3"), "held by node 1:\n{dom}");
        let shots = repo().join("target/test-artifacts");
        std::fs::create_dir_all(&shots).expect("artefacts");
        let shot = shots.join("status.png");
        let _ = std::fs::remove_file(&shot);
        chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1280,1000", "--virtual-time-budget=4000"], &url);
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "a screenshot at {}", shot.display());
        assert_eq!(calls.join().expect("calls"), Calls { ok: 3, failed: 0 });
    });
    // the last CDRs, as JSON for scripts
    let cdrs = n1.http_get("/api/v1/cdrs");
    assert!(cdrs.contains("\"trunk\":\"shown\""), "{cdrs}");
}

fn get(port: u16, path: &str, auth: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn with_an_admin_token_the_page_and_its_api_need_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = dir.path().join("token");
    std::fs::write(&token, "status-page-token-0123456789\n").expect("token");
    let node = Node::start(39850, &format!("[admin]\ntoken_file = \"{}\"\n", token.display()));
    let http = node.admin + 1;
    for path in ["/", "/api/v1/members", "/api/v1/cdrs"] {
        let r = get(http, path, None);
        assert!(r.starts_with("HTTP/1.1 401") && r.contains("www-authenticate: Basic"), "{path} without the token: {r}");
        assert!(get(http, path, Some("Bearer wrong-token-wrong-token")).starts_with("HTTP/1.1 401"));
    }
    assert!(get(http, "/api/v1/members", Some("Bearer status-page-token-0123456789")).starts_with("HTTP/1.1 200"));
    // a browser's Basic credentials: any user, the token as password (base64 of "ops:status-page-token-0123456789")
    assert!(get(http, "/", Some("Basic b3BzOnN0YXR1cy1wYWdlLXRva2VuLTAxMjM0NTY3ODk=")).starts_with("HTTP/1.1 200"));
    assert!(get(http, "/metrics", None).starts_with("HTTP/1.1 200"), "metrics stay open to scrapers");
}

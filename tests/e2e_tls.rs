//! An authenticated cluster, end to end: real `hatrunk` processes whose gRPC is mutual TLS with a
//! cluster CA made by `hatrunk certs`. A node holding a certificate from another CA cannot join,
//! the admin API refuses a client without credentials, and the admin token works where set.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn creds(dir: &std::path::Path, who: Option<&str>) -> Vec<(&'static str, String)> {
    creds_with(dir, dir, who)
}

/// Trust `ca_dir`'s CA and, with `who`, present `who`'s certificate from `dir`.
fn creds_with(ca_dir: &std::path::Path, dir: &std::path::Path, who: Option<&str>) -> Vec<(&'static str, String)> {
    let mut v = vec![("HATRUNK_CA", ca_dir.join("ca.pem").display().to_string())];
    if let Some(w) = who {
        v.push(("HATRUNK_CERT", dir.join(format!("{w}.pem")).display().to_string()));
        v.push(("HATRUNK_KEY", dir.join(format!("{w}.key")).display().to_string()));
    }
    v
}

fn voters(node: &Node, env: &[(&str, String)]) -> usize {
    let out = cli_env(node, &["cluster", "members", "-o", "json"], env);
    assert!(out.status.success(), "members failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array().map(|a| a.iter().filter(|m| m["voter"] == true).count()).unwrap_or(0)
}

#[test]
fn only_holders_of_a_cluster_certificate_join_or_administer() {
    require_sipp();
    let pki = tempfile::tempdir().expect("tempdir");
    let ours = pki.path().join("ours");
    let theirs = pki.path().join("theirs");
    make_certs(&ours, "n1,n2");
    make_certs(&theirs, "n3");
    let n1 = Node::member_with(35000, 1, true, &tls_section(&ours, &ours, "n1"));
    let n2 = Node::member_with(35010, 2, false, &tls_section(&ours, &ours, "n2"));
    // n3 trusts our CA but its own certificate comes from another one
    let n3 = Node::member_with(35020, 3, false, &tls_section(&ours, &theirs, "n3"));
    let admin = creds(&ours, Some("admin"));

    // a member with a certificate from the cluster CA joins and becomes a voter
    let out = cli_env(&n1, &["cluster", "join", &format!("127.0.0.1:{}", n2.admin)], &admin);
    assert!(out.status.success(), "join n2: {}\n{}", String::from_utf8_lossy(&out.stderr), n1.log());
    let t0 = Instant::now();
    while voters(&n1, &admin) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "n2 never became a voter:\n{}", n1.log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // the foreign node is refused: the leader cannot verify it, so it never becomes a member
    let out = cli_env(&n1, &["cluster", "join", &format!("127.0.0.1:{}", n3.admin)], &admin);
    assert!(!out.status.success(), "a node with a foreign certificate joined:\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(voters(&n1, &admin), 2);

    // and it cannot talk to the cluster itself: its certificate is refused at the handshake
    let out = cli_env(&n1, &["cluster", "members"], &creds_with(&ours, &theirs, Some("n3")));
    assert!(!out.status.success(), "a foreign certificate read the membership");
    // nor can a client with no certificate, or one that does not talk TLS at all
    let out = cli_env(&n1, &["cluster", "members"], &creds(&ours, None));
    assert!(!out.status.success(), "a client without a certificate read the membership");
    let out = cli_env(&n1, &["cluster", "members"], &[]);
    assert!(!out.status.success(), "a plain-text client read the membership");
    // the refused join left nothing behind on the foreign node either
    assert!(!n3.log().contains("became leader"), "{}", n3.log());
    drop(n3);

    // the operator certificate works against any member, including a follower passing a verb on
    let out = cli_env(&n2, &["cluster", "status", "-o", "json"], &admin);
    assert!(out.status.success(), "status via n2: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_admin_token_is_required_when_set() {
    require_sipp();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "b7c1f0e2a9d84c36a5e1\n").expect("token");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "b7c1f0e2a9d84c36a5e2\n").expect("token");
    let node = Node::start(35100, &format!("[admin]\ntoken_file = \"{}\"\n", token.display()));

    for env in [vec![], vec![("HATRUNK_TOKEN_FILE", wrong.display().to_string())]] {
        let out = cli_env(&node, &["trunk", "list"], &env);
        assert_eq!(out.status.code(), Some(5), "without the right token: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cli_env(&node, &["trunk", "list"], &[("HATRUNK_TOKEN_FILE", token.display().to_string())]);
    assert!(out.status.success(), "with the token: {}", String::from_utf8_lossy(&out.stderr));
    // the token never shows in the node's log
    assert!(!node.log().contains("b7c1f0e2a9d84c36a5e1"));
}

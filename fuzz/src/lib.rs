//! Fuzz targets: every parser that reads bytes an outsider controls, each as a function that must
//! not panic on any input and that checks the invariants the rest of hatrunk relies on. The same
//! functions run three ways: under libFuzzer for long runs (`fuzz/libfuzzer`, nightly), as short
//! property tests in CI (`tests/`), and over every input a fuzzer ever found (`regressions/`).
//!
//! Targets: the SIP framer and parser with the typed header views the proxy reads; the digest
//! `Authorization` parser with verification and single-use nonces; the trunk file; the node config;
//! the admin API's protobuf requests and the cluster RPCs' bincode payloads.

pub mod seeds;

use bytes::BytesMut;
use hatrunk_sip::digest::{Credentials, NonceIssuer};
use hatrunk_sip::framing::next_frame;
use hatrunk_sip::headers::{addr_uri, param, parse_cseq, split_list, SipUri, Via};
use hatrunk_sip::parse::parse;
use prost::Message;

/// A fuzz target: takes any bytes, must never panic.
pub type Target = fn(&[u8]);

/// The targets by name, as the runner and the regression test address them.
pub const TARGETS: [(&str, Target); 5] = [("sip", sip), ("digest", digest), ("trunk", trunk), ("node_config", node_config), ("rpc", rpc)];

/// A byte stream cut into messages (as TCP/TLS delivers it) and the whole input as one datagram.
pub fn sip(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    while let Ok(Some(frame)) = next_frame(&mut buf) {
        frames += 1;
        assert!(frame.len() <= hatrunk_sip::framing::MAX_MESSAGE, "a frame over the size limit");
        message(&frame, false);
        if frames > 10_000 {
            break;
        }
    }
    message(data, true);
}

fn message(bytes: &[u8], datagram: bool) {
    let Ok(m) = parse(bytes, datagram) else {
        return;
    };
    assert!(m.headers.len() <= hatrunk_sip::parse::MAX_HEADERS, "more headers than the limit");
    // the typed views the proxy reads from a message it accepted
    for v in m.headers_named("Via") {
        if let Ok(via) = Via::parse(v) {
            let _ = via.branch();
        }
    }
    for name in ["From", "To", "Contact", "Route", "Record-Route"] {
        for v in m.headers_named(name) {
            for item in split_list(v) {
                let _ = param(item, "tag");
                if let Ok(u) = SipUri::parse(addr_uri(item)) {
                    let _ = u.user_unescaped();
                    let _ = u.param("transport");
                }
            }
        }
    }
    if let Some(c) = m.header("CSeq") {
        let _ = parse_cseq(c);
    }
    if let Some(u) = m.uri() {
        let _ = SipUri::parse(u);
    }
    if let Some(a) = m.header("Authorization").or(m.header("Proxy-Authorization")) {
        digest(a.as_bytes());
    }
    // what we forward is what we serialise: it must parse back to the same message
    let again = parse(&m.to_bytes(), datagram).expect("a message hatrunk serialised does not parse back");
    assert_eq!(again.start, m.start, "start line changed in a round trip");
    assert_eq!(again.body, m.body, "body changed in a round trip");
}

/// A digest `Authorization` value: parsed, verified against a fixed HA1, its nonce checked.
pub fn digest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(c) = Credentials::parse(text) else {
        return;
    };
    let _ = c.nonce_count();
    let _ = c.verify("INVITE", "0123456789abcdef0123456789abcdef");
    let mut nonces = NonceIssuer::new("fuzz-secret", 300_000);
    let _ = nonces.check(&c.nonce, 1_000);
    // a nonce we did not issue is never accepted, and none is accepted twice
    if nonces.consume(&c.nonce, 1_000) {
        assert!(!nonces.consume(&c.nonce, 1_000), "a nonce was accepted twice");
    }
}

/// A trunk file as `hatrunk trunk apply` sends it: refused whole or accepted; an accepted one
/// serialises without its password.
pub fn trunk(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = hatrunk_core::trunk::parse_trunk(text) {
        let shown = t.redacted().to_string();
        for a in [Some(&t.primary), t.secondary.as_ref()].into_iter().flatten() {
            if let Some(h) = &a.ha1 {
                assert!(!shown.contains(&h.md5) && !shown.contains(&h.sha256), "an HA1 in the redacted form");
                assert!(!format!("{t:?}").contains(&h.md5), "an HA1 in the Debug form");
            }
        }
        assert!(!shown.contains("\"password\""), "a password in the redacted form");
        assert!(t.max_concurrent_calls > 0, "a trunk with limit 0 was accepted");
    }
}

/// A node config file.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = hatrunk_node::config::NodeConfig::from_toml(text) {
        assert!(c.node.id >= 1, "node.id 0 was accepted");
        c.sip_listen().expect("a config that validated has usable listeners");
    }
}

/// The gRPC payloads a peer controls: the first byte picks the message, the rest is its encoding
/// (protobuf for the admin API, size-limited bincode for cluster RPCs).
pub fn rpc(data: &[u8]) {
    use hatrunk_consensus::codec::decode;
    use hatrunk_consensus::TypeConfig;
    use hatrunk_node::admin::pb;
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(r) = pb::ApplyTrunkRequest::decode(body) {
                trunk(r.toml.as_bytes());
            }
        }
        1 => drop(pb::JoinRequest::decode(body)),
        2 => drop(pb::TrunkId::decode(body)),
        3 => drop(pb::CallsRequest::decode(body)),
        4 => drop(decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(body)),
        5 => drop(decode::<openraft::raft::VoteRequest<u64>>(body)),
        6 => drop(decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(body)),
        _ => drop(decode::<hatrunk_consensus::Request>(body)),
    }
}

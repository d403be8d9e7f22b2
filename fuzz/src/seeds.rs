//! Starting inputs for each target: the RFC 4475 torture messages for SIP (`../shared/sip-torture`),
//! and for the others valid examples of what the parser expects, so mutations start from the
//! interesting part of the input space rather than from noise.

use std::path::PathBuf;

use hatrunk_consensus::codec::encode;
use prost::Message;

const INVITE: &str = "INVITE sip:6561230000@192.0.2.1:5060;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;received=1.2.3.4\r\n\
Max-Forwards: 70\r\nFrom: \"Carrier\" <sip:+6580000000@198.51.100.7>;tag=1928301774\r\n\
To: <sip:6561230000@192.0.2.1>\r\nCall-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 INVITE\r\n\
Contact: <sip:carrier@198.51.100.7:5060;transport=tcp>\r\nRoute: <sip:192.0.2.1;lr;ht=abc>, <sip:192.0.2.2;lr>\r\n\
Proxy-Authorization: Digest username=\"acme\", realm=\"hatrunk\", nonce=\"1.2.abc\", uri=\"sip:x\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"c\"\r\n\
Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n";

const TRUNK: &str = "id = \"acme\"\nnumbers = [\"6561230000\", \"6561230001\"]\nmax_concurrent_calls = 30\n\
mode = \"auto-failover\"\nadvanced_ha = \"2t\"\nfailover_policy = \"custom\"\nfailover_codes = [486, 503]\nfailover_timeout_ms = 2500\n\
[primary]\nlabel = \"HQ PBX\"\nauth = \"ip\"\ntarget = \"sip:192.0.2.10:5060\"\ntransport = \"udp\"\nallowed_ips = [\"192.0.2.10/32\"]\n\
caller_id = \"+6561230000\"\nprobe_interval_ms = 5000\n\
[secondary]\nlabel = \"DR PBX\"\nauth = \"digest\"\nusername = \"acme-dr\"\npassword = \"s3cret\"\ntransport = \"tls\"\nallowed_ips = [\"198.51.100.0/24\"]\n";

const NODE: &str = "[node]\nid = 2\nname = \"n2\"\nregion = \"sg\"\nzone = \"sg-a\"\nrole = \"sip\"\ndata_dir = \"/var/lib/hatrunk\"\n\
[sip]\nlisten = [\"udp:10.0.0.2:5060\", \"tcp:10.0.0.2:5060\", \"tls:10.0.0.2:5061\"]\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n\
[cluster]\nlisten = \"10.0.0.2:7700\"\nbootstrap = false\n[http]\nlisten = \"127.0.0.1:9090\"\n[upstream]\ntarget = \"sip:192.0.2.1:5060\"\n\
[security]\ntrusted = [\"192.0.2.0/24\"]\nmax_new_requests = 100\n[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n";

const AUTH: &str = "Digest username=\"acme\", realm=\"hatrunk\", nonce=\"1700000000000.7.0a1b2c3d4e5f\", \
uri=\"sip:hatrunk\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=SHA-256, qop=auth, nc=0000000a, cnonce=\"0a4f113b\"";

/// The torture messages, if `../shared/sip-torture` is beside the checkout.
fn torture() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sip-torture");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "dat")).filter_map(|e| std::fs::read(e.path()).ok()).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Seeds for `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "sip" => {
            let mut v = torture();
            v.push(INVITE.as_bytes().to_vec());
            v.push(format!("{INVITE}{INVITE}").into_bytes());
            v
        }
        "digest" => vec![AUTH.as_bytes().to_vec(), b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"".to_vec()],
        "trunk" => vec![TRUNK.as_bytes().to_vec()],
        "node_config" => vec![NODE.as_bytes().to_vec(), Vec::new()],
        "rpc" => {
            let mut apply = vec![0u8];
            hatrunk_node::admin::pb::ApplyTrunkRequest { toml: TRUNK.into(), force: false }.encode(&mut apply).unwrap_or_default();
            let mut join = vec![1u8];
            hatrunk_node::admin::pb::JoinRequest { addr: "10.0.0.3:7700".into(), learner: true }.encode(&mut join).unwrap_or_default();
            let req = hatrunk_consensus::Request {
                client: 7,
                serial: 1,
                command: hatrunk_consensus::Command::Admit { trunk: "acme".into(), slot: "n1:abc".into() },
            };
            let mut cmd = vec![7u8];
            cmd.extend(encode(&req).unwrap_or_default());
            vec![apply, join, cmd]
        }
        _ => Vec::new(),
    }
}

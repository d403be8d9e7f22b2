//! Signatures on calls forwarded between members (Advanced HA). A forwarded INVITE skips
//! admission at the node that receives it (the sender already holds the slot), so a forged one
//! would be a call outside the trunk's limit. The member's source address alone is not proof over
//! UDP; an HMAC-SHA256 with the cluster's secret (replicated through Raft, which runs over mutual
//! TLS) over the Call-ID and the sender's name is.

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(secret: &str, call_id: &str, node: &str) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(b"hatrunk-forward\0");
    m.update(call_id.as_bytes());
    m.update(b"\0");
    m.update(node.as_bytes());
    Some(m)
}

/// The `X-Hatrunk-Ingress` value for a call `node` forwards: `NAME;sig=HEX`, or just the name
/// before the cluster has its secret.
pub(super) fn ingress_value(secret: Option<&str>, call_id: &str, node: &str) -> String {
    match secret.and_then(|s| mac(s, call_id, node)) {
        Some(m) => format!("{node};sig={}", hex::encode(m.finalize().into_bytes())),
        None => node.to_string(),
    }
}

/// Whether an `X-Hatrunk-Ingress` value is signed with `secret` for this Call-ID (compared in
/// constant time). Without a secret yet (a cluster's first second) every value passes.
pub(super) fn verify(secret: Option<&str>, call_id: &str, value: &str) -> bool {
    let Some(secret) = secret else {
        return true;
    };
    let Some((node, sig)) = value.split_once(";sig=") else {
        return false;
    };
    let (Ok(sig), Some(m)) = (hex::decode(sig.trim()), mac(secret, call_id, node.trim())) else {
        return false;
    };
    m.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_signs_a_forward() {
        let v = ingress_value(Some("s3cret"), "call-1", "n2");
        assert!(v.starts_with("n2;sig="));
        assert!(verify(Some("s3cret"), "call-1", &v));
        assert!(!verify(Some("other"), "call-1", &v), "another secret");
        assert!(!verify(Some("s3cret"), "call-2", &v), "another call");
        assert!(!verify(Some("s3cret"), "call-1", &v.replace("n2;", "n3;")), "another node");
        for bad in ["n2", "n2;sig=", "n2;sig=zz", ""] {
            assert!(!verify(Some("s3cret"), "call-1", bad), "{bad:?}");
        }
        assert!(verify(None, "call-1", "n2"), "no secret yet: as before");
    }
}

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

/// The `X-Hatrunk-Ingress` value for a call `node` forwards: `NAME;applied=N;sig=HEX`, or
/// without `;sig` before the cluster has its secret. `applied` is how far the sender's state had
/// come (`catch_up.rs`); it stands before `;sig` and is signed as part of the sender's identity,
/// so a member of the release before it, which signs and checks `NAME` alone, still verifies it.
pub(super) fn ingress_value(secret: Option<&str>, call_id: &str, node: &str, applied: Option<u64>) -> String {
    let who = match applied {
        Some(n) => format!("{node};{APPLIED}{n}"),
        None => node.to_string(),
    };
    match secret.and_then(|s| mac(s, call_id, &who)) {
        Some(m) => format!("{who};sig={}", hex::encode(m.finalize().into_bytes())),
        None => who,
    }
}

const APPLIED: &str = "applied=";

/// The sender's applied index in an `X-Hatrunk-Ingress` value (verify it first); none from a
/// member of an earlier release.
pub(super) fn applied_of(value: &str) -> Option<u64> {
    let who = value.split_once(";sig=").map_or(value, |(who, _)| who);
    who.rsplit_once(';')?.1.trim().strip_prefix(APPLIED)?.parse().ok()
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
        let v = ingress_value(Some("s3cret"), "call-1", "n2", None);
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

    #[test]
    fn the_applied_index_is_signed_and_read_back() {
        let v = ingress_value(Some("s3cret"), "call-1", "n2", Some(42));
        assert!(v.starts_with("n2;applied=42;sig="), "{v}");
        assert!(verify(Some("s3cret"), "call-1", &v));
        assert_eq!(applied_of(&v), Some(42));
        assert!(!verify(Some("s3cret"), "call-1", &v.replace("=42;", "=43;")), "the index cannot be changed");
        assert_eq!(applied_of(&ingress_value(None, "call-1", "n2", Some(7))), Some(7), "before the secret too");
        // `verify` is the release before's unchanged, so that release accepts ours (checked above);
        // a forward from it carries no index
        assert_eq!(applied_of(&ingress_value(Some("s3cret"), "call-1", "n2", None)), None);
        assert_eq!(applied_of("n2"), None);
        for bad in ["n2;applied=", "n2;applied=x;sig=00", "n2;applied=-1"] {
            assert_eq!(applied_of(bad), None, "{bad:?}");
        }
    }
}

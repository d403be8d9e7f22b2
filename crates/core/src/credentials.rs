//! Digest HA1 values (RFC 7616 section 3.4.2): what we store instead of a password.
//!
//! The realm is fixed cluster-wide because an HA1 binds username, realm and password together:
//! changing the realm would invalidate every stored credential.

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The digest realm every hatrunk node challenges with.
pub const REALM: &str = "hatrunk";

/// HA1 for both algorithms we accept (MD5 for old PBXes, SHA-256 per RFC 7616).
/// `Debug` shows neither hash: a trunk or a replicated command printed in a log or an error must
/// not carry what a password cracker needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestHa1 {
    pub md5: String,
    pub sha256: String,
}

impl std::fmt::Debug for DigestHa1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestHa1(redacted)")
    }
}

impl DigestHa1 {
    pub fn derive(username: &str, password: &str) -> Self {
        let input = format!("{username}:{REALM}:{password}");
        DigestHa1 { md5: hex::encode(Md5::digest(input.as_bytes())), sha256: hex::encode(Sha256::digest(input.as_bytes())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_known_md5() {
        // md5("u:hatrunk:p") computed independently with coreutils md5sum.
        let h = DigestHa1::derive("u", "p");
        assert_eq!(h.md5, "42c3f602828293047691fefb11409ad2");
        assert_eq!(h.sha256.len(), 64);
        assert_ne!(DigestHa1::derive("u", "q"), h);
    }
}

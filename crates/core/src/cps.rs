//! A trunk's calls-per-second limit as escrow tokens, so it holds cluster-wide without a
//! consensus round trip per call.
//!
//! Every call admitted on a trunk with `max_calls_per_second = R` first takes a token of the
//! trunk's rate pool, which has R tokens, and gives it back [`TOKEN_MS`] later. Tokens live in the
//! escrow ledger under [`rate_key`], so nodes hold shares of them and take them locally, exactly as
//! they take concurrent-call slots (`escrow`), and the ledger keeps the shares within R. Exactness:
//! the calls admitted within any window of [`TOKEN_MS`] all still hold their tokens at its end, and
//! at most R tokens are held at any moment, so no window admits more than R calls.
//!
//! Tokens differ from slots in one way, which the ledger applies by [`rate_trunk`]: a node that lost
//! its lease or restarted holds none, since its last token went back within [`TOKEN_MS`] of the
//! last call it admitted. A node therefore takes a token only while its lease has [`TOKEN_MS`] left
//! (so its tokens are back before the leader can see the lease lapse) and not in the first
//! [`TOKEN_MS`] after its boot (so tokens of a previous life of the node are back too).

/// How long an admitted call holds its token.
pub const TOKEN_MS: u64 = 1000;

const SUFFIX: &str = "/cps";

/// The ledger key of `trunk`'s tokens (a trunk id has no `/`, so no trunk is named like one).
pub fn rate_key(trunk: &str) -> String {
    format!("{trunk}{SUFFIX}")
}

/// The trunk whose tokens `key` names, if it names tokens.
pub fn rate_trunk(key: &str) -> Option<&str> {
    key.strip_suffix(SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_key_names_its_trunk_and_no_trunk_is_one() {
        assert_eq!(rate_trunk(&rate_key("acme")), Some("acme"));
        assert_eq!(rate_trunk("acme"), None);
        assert!(crate::trunk::parse_trunk(
            "id = \"a/cps\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 1\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\n"
        )
        .is_err());
    }
}

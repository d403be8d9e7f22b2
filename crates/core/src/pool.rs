//! Concurrent-call accounting: one pool per trunk, shared by both accounts and both directions.
//!
//! Decision is idempotent per call reference (a retried admit of the same call is not a second
//! slot) and strict: a call is admitted only while `used < limit`, so lowering a limit below the
//! calls in progress admits nothing until enough calls end. The consensus layer applies these same
//! operations in its replicated state machine.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The pool's verdict on an admission request (named apart from the node's `Admission` trait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Granted,
    /// This call already holds a slot (a retried request).
    AlreadyHeld,
    /// The trunk is at its limit.
    Full {
        used: u32,
        limit: u32,
    },
    /// The trunk's calls-per-second limit was reached (`cps`); never in the ledger itself, which
    /// answers [`Decision::Full`] for a rate pool too (variants go at the end: it is replicated).
    RateLimited {
        per_second: u32,
    },
}

impl Decision {
    pub fn admitted(self) -> bool {
        !matches!(self, Decision::Full { .. } | Decision::RateLimited { .. })
    }
}

/// Slots held, per trunk, and which call holds each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    used: HashMap<String, u32>,
    holders: HashMap<String, String>,
}

impl Pool {
    /// Take a slot of `trunk` (whose limit is `limit`) for `call`.
    pub fn admit(&mut self, trunk: &str, limit: u32, call: &str) -> Decision {
        if self.holders.contains_key(call) {
            return Decision::AlreadyHeld;
        }
        let used = self.used.get(trunk).copied().unwrap_or(0);
        if used >= limit {
            return Decision::Full { used, limit };
        }
        self.used.insert(trunk.to_string(), used + 1);
        self.holders.insert(call.to_string(), trunk.to_string());
        Decision::Granted
    }

    /// Give back `call`'s slot. Returns the trunk it belonged to; releasing twice is harmless.
    pub fn release(&mut self, call: &str) -> Option<String> {
        let trunk = self.holders.remove(call)?;
        if let Some(n) = self.used.get_mut(&trunk) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.used.remove(&trunk);
            }
        }
        Some(trunk)
    }

    pub fn used(&self, trunk: &str) -> u32 {
        self.used.get(trunk).copied().unwrap_or(0)
    }

    pub fn holds(&self, call: &str) -> bool {
        self.holders.contains_key(call)
    }

    /// The calls whose slot reference starts with `prefix` (a node's calls: `node/...`).
    pub fn holders_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self.holders.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        v.sort();
        v
    }

    /// The calls holding a slot of `trunk` (slot references: `node/...`).
    pub fn holders_of<'a>(&'a self, trunk: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.holders.iter().filter(move |(_, t)| t.as_str() == trunk).map(|(c, _)| c.as_str())
    }

    /// Slots in use per trunk.
    pub fn usage(&self) -> impl Iterator<Item = (&str, u32)> {
        self.used.iter().map(|(t, n)| (t.as_str(), *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_idempotent() {
        let mut p = Pool::default();
        assert_eq!(p.admit("t", 2, "a"), Decision::Granted);
        assert_eq!(p.admit("t", 2, "a"), Decision::AlreadyHeld);
        assert_eq!(p.admit("t", 2, "b"), Decision::Granted);
        assert_eq!(p.admit("t", 2, "c"), Decision::Full { used: 2, limit: 2 });
        assert_eq!(p.admit("u", 1, "c"), Decision::Granted, "pools are per trunk");
        assert_eq!(p.release("a").as_deref(), Some("t"));
        assert_eq!(p.release("a"), None);
        assert_eq!(p.admit("t", 2, "c2"), Decision::Granted);
    }

    #[test]
    fn lowered_limit_admits_nothing_until_it_fits() {
        let mut p = Pool::default();
        for c in ["a", "b", "c"] {
            assert!(p.admit("t", 3, c).admitted());
        }
        assert!(!p.admit("t", 1, "d").admitted());
        p.release("a");
        assert!(!p.admit("t", 1, "d").admitted());
        p.release("b");
        assert!(!p.admit("t", 1, "d").admitted());
        p.release("c");
        assert!(p.admit("t", 1, "d").admitted());
    }

    #[test]
    fn never_over_admits_under_any_interleaving() {
        // a small exhaustive walk: random-ish sequence from a fixed LCG, check the bound each step
        let mut p = Pool::default();
        let mut x: u64 = 12345;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let call = format!("c{}", (x >> 33) % 50);
            if (x >> 20).is_multiple_of(2) {
                p.admit("t", 7, &call);
            } else {
                p.release(&call);
            }
            assert!(p.used("t") <= 7);
        }
    }
}

//! Failover policies: which outcome of an attempt moves a call from the Primary to the Secondary.
//!
//! `current` is seed 001's table (the default), `legacy` is seed 000's, `custom` is a carrier's own
//! code list. Connection errors and silence past the failover timer always fail over: they are the
//! far-end failures every table names. A CANCEL from the caller never does.

use serde::{Deserialize, Serialize};

/// How an attempt towards one account ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "code")]
pub enum Outcome {
    /// A 2xx final response: the call is answered.
    Answered(u16),
    /// A final response 300-699 from the far end.
    Final(u16),
    /// The target could not be reached (ICMP unreachable, TCP refused or reset, no route).
    ConnectionError,
    /// No provisional or final answer within the trunk's failover timer.
    NoAnswer,
    /// A Digest account had no live registration to deliver to; nothing was sent.
    UserNotRegistered,
    /// The caller cancelled while this attempt was in progress.
    Cancelled,
}

impl Outcome {
    /// The metric label of an outcome: its SIP code, or what happened instead.
    pub fn label(self) -> String {
        match self {
            Outcome::Answered(c) | Outcome::Final(c) => c.to_string(),
            Outcome::ConnectionError => "connection_error".into(),
            Outcome::NoAnswer => "no_answer".into(),
            Outcome::UserNotRegistered => "user_not_registered".into(),
            Outcome::Cancelled => "cancelled".into(),
        }
    }
}

/// A trunk's failover policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPolicy {
    Current,
    Legacy,
    Custom(Vec<u16>),
}

/// Seed 001: far-end failures that move the call to the Secondary.
pub const CURRENT_CODES: &[u16] = &[408, 480, 500, 501, 502, 503, 504, 505, 513, 580];
/// Seed 000: the older table (authentication, timeout and not-found codes).
pub const LEGACY_CODES: &[u16] = &[401, 407, 408, 404];

impl FailoverPolicy {
    /// The codes that trigger failover under this policy.
    pub fn codes(&self) -> &[u16] {
        match self {
            FailoverPolicy::Current => CURRENT_CODES,
            FailoverPolicy::Legacy => LEGACY_CODES,
            FailoverPolicy::Custom(c) => c,
        }
    }

    /// Whether `outcome` of the Primary's attempt sends the same call to the Secondary.
    ///
    /// A lapsed registration is a client-side issue under `current` (seed 001 lists
    /// USER_NOT_REGISTERED as "do not fail over"), but seed 000 fails over on "user not registered"
    /// (its 404 row); a custom list fails over on it when it contains 404 or 480.
    pub fn triggers(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Answered(_) | Outcome::Cancelled => false,
            Outcome::ConnectionError | Outcome::NoAnswer => true,
            Outcome::Final(code) => self.codes().contains(&code),
            Outcome::UserNotRegistered => match self {
                FailoverPolicy::Current => false,
                FailoverPolicy::Legacy => true,
                FailoverPolicy::Custom(c) => c.contains(&404) || c.contains(&480),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FailoverPolicy::Current => "current",
            FailoverPolicy::Legacy => "legacy",
            FailoverPolicy::Custom(_) => "custom",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every final code 300-699 under `current`: exactly seed 001's table fails over.
    #[test]
    fn current_table_every_code() {
        let p = FailoverPolicy::Current;
        for code in 300..=699u16 {
            let expect = matches!(code, 408 | 480 | 500..=505 | 513 | 580);
            assert_eq!(p.triggers(Outcome::Final(code)), expect, "code {code}");
        }
        // seed 001's "do not" rows, named
        for code in [401, 407, 403, 404, 486, 599, 600, 603, 604, 606] {
            assert!(!p.triggers(Outcome::Final(code)), "code {code}");
        }
        assert!(!p.triggers(Outcome::UserNotRegistered));
    }

    #[test]
    fn legacy_table_every_code() {
        let p = FailoverPolicy::Legacy;
        for code in 300..=699u16 {
            let expect = matches!(code, 401 | 407 | 408 | 404);
            assert_eq!(p.triggers(Outcome::Final(code)), expect, "code {code}");
        }
        assert!(!p.triggers(Outcome::Final(503)));
        assert!(p.triggers(Outcome::UserNotRegistered));
    }

    #[test]
    fn custom_table_every_code() {
        let p = FailoverPolicy::Custom(vec![486, 600]);
        for code in 300..=699u16 {
            assert_eq!(p.triggers(Outcome::Final(code)), code == 486 || code == 600, "code {code}");
        }
        assert!(!p.triggers(Outcome::UserNotRegistered));
        assert!(FailoverPolicy::Custom(vec![480]).triggers(Outcome::UserNotRegistered));
    }

    #[test]
    fn network_failures_always_trigger_cancel_never() {
        for p in [FailoverPolicy::Current, FailoverPolicy::Legacy, FailoverPolicy::Custom(vec![])] {
            assert!(p.triggers(Outcome::ConnectionError));
            assert!(p.triggers(Outcome::NoAnswer));
            assert!(!p.triggers(Outcome::Cancelled));
            assert!(!p.triggers(Outcome::Answered(200)));
        }
    }
}

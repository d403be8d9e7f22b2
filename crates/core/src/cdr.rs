//! Call detail records: the disposition and cause of every outcome, in the seeds' vocabulary, and the
//! record written per call (one JSON object per line).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::Outcome;
use crate::trunk::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    #[serde(rename = "ANSWERED")]
    Answered,
    #[serde(rename = "BUSY")]
    Busy,
    #[serde(rename = "NO ANSWER")]
    NoAnswer,
    #[serde(rename = "CONGESTION")]
    Congestion,
    #[serde(rename = "FAILED")]
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cause {
    NormalClearing,
    FarendRequireAuth,
    FarendConnectionError,
    FarendResponse,
    UserNotRegistered,
    UserBusy,
    OriginatorCancel,
    /// The trunk's shared pool was full.
    CallLimitExceeded,
    /// The node could not reach a majority of the cluster, so it could not admit the call.
    ClusterUnavailable,
    /// The call reached its maximum duration without a BYE and was cleared by the safety timer.
    MaxDurationExceeded,
    /// An outbound call from a PBX that failed authentication or came from an address not allowed.
    Unauthorized,
    /// A session timer (RFC 4028) ran out without a refresh and without a BYE: the node sent both.
    SessionExpired,
    /// The trunk's calls-per-second limit (`max_calls_per_second`) was reached.
    CpsLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Disposition and cause of a call whose last attempt ended with `outcome` (seed 000's table, with
/// the codes it does not name mapped the way a carrier's CDR usually reads).
pub fn classify(outcome: Outcome) -> (Disposition, Cause) {
    use Disposition::*;
    match outcome {
        Outcome::Answered(_) => (Answered, Cause::NormalClearing),
        Outcome::ConnectionError | Outcome::NoAnswer => (Congestion, Cause::FarendConnectionError),
        Outcome::UserNotRegistered => (Failed, Cause::UserNotRegistered),
        Outcome::Cancelled => (NoAnswer, Cause::OriginatorCancel),
        Outcome::Final(code) => match code {
            401 | 407 => (Congestion, Cause::FarendRequireAuth),
            408 => (Congestion, Cause::FarendResponse),
            486 | 600 => (Busy, Cause::UserBusy),
            480 => (NoAnswer, Cause::FarendResponse),
            487 => (NoAnswer, Cause::OriginatorCancel),
            _ => (Failed, Cause::FarendResponse),
        },
    }
}

/// One attempt of a call towards one account (or, outbound, towards the carrier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Role>,
    /// Shared, not copied: every attempt a node makes names the same node, zone and region.
    pub node: Arc<str>,
    pub zone: Arc<str>,
    pub region: Arc<str>,
    pub target: String,
    /// Final SIP code, if one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// `connection_error`, `no_answer`, `user_not_registered` or `cancelled` when no code says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

impl AttemptRecord {
    /// Fill `code` / `error` from an outcome.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        let (code, error) = match outcome {
            Outcome::Answered(c) | Outcome::Final(c) => (Some(c), None),
            Outcome::ConnectionError => (None, Some("connection_error")),
            Outcome::NoAnswer => (None, Some("no_answer")),
            Outcome::UserNotRegistered => (None, Some("user_not_registered")),
            Outcome::Cancelled => (None, Some("cancelled")),
        };
        self.code = code;
        self.error = error.map(str::to_string);
    }

    /// The outcome [`Self::set_outcome`] recorded, if any.
    pub fn outcome(&self) -> Option<Outcome> {
        match (self.code, self.error.as_deref()) {
            (Some(c), _) if (200..300).contains(&c) => Some(Outcome::Answered(c)),
            (Some(c), _) => Some(Outcome::Final(c)),
            (None, Some("connection_error")) => Some(Outcome::ConnectionError),
            (None, Some("no_answer")) => Some(Outcome::NoAnswer),
            (None, Some("user_not_registered")) => Some(Outcome::UserNotRegistered),
            (None, Some("cancelled")) => Some(Outcome::Cancelled),
            _ => None,
        }
    }
}

/// The record of one call, written when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    pub call_id: String,
    pub trunk: Option<String>,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    /// Unix milliseconds.
    pub start_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_ms: Option<u64>,
    pub end_ms: u64,
    pub disposition: Disposition,
    pub cause: Cause,
    /// The SIP code sent back to the caller, when the call was not answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_code: Option<u16>,
    pub failover: bool,
    /// From the Primary's failure being detected to the Secondary's INVITE being sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<u64>,
    /// The Primary was known Down and skipped (Auto Fail-over with health probing).
    pub primary_skipped: bool,
    pub attempts: Vec<AttemptRecord>,
}

impl Cdr {
    /// Move the record's instants by `ms` (the node's clock to the wall clock when written).
    pub fn shift(&mut self, ms: i64) {
        let at = |t: u64| t.saturating_add_signed(ms);
        self.start_ms = at(self.start_ms);
        self.answer_ms = self.answer_ms.map(at);
        self.end_ms = at(self.end_ms);
    }
}

/// What an egress node tells the ingress about a forwarded call, in its responses, so the one CDR the
/// ingress writes names every attempt towards the PBX with the node, zone and region that made it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressReport {
    pub attempts: Vec<AttemptRecord>,
    #[serde(default)]
    pub failover: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<u64>,
    #[serde(default)]
    pub primary_skipped: bool,
    /// Set on final failures: how the egress classified the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_disposition() {
        for code in 300..=699 {
            let (d, c) = classify(Outcome::Final(code));
            assert_ne!(d, Disposition::Answered, "{code}");
            assert_ne!(c, Cause::NormalClearing, "{code}");
        }
        assert_eq!(classify(Outcome::Final(401)), (Disposition::Congestion, Cause::FarendRequireAuth));
        assert_eq!(classify(Outcome::Final(407)), (Disposition::Congestion, Cause::FarendRequireAuth));
        assert_eq!(classify(Outcome::Final(486)), (Disposition::Busy, Cause::UserBusy));
        assert_eq!(classify(Outcome::ConnectionError), (Disposition::Congestion, Cause::FarendConnectionError));
        assert_eq!(classify(Outcome::UserNotRegistered), (Disposition::Failed, Cause::UserNotRegistered));
        assert_eq!(classify(Outcome::Answered(200)), (Disposition::Answered, Cause::NormalClearing));
    }

    #[test]
    fn a_record_moves_to_the_wall_clock_whole() {
        let mut c = Cdr {
            call_id: "c".into(),
            trunk: None,
            direction: Direction::Inbound,
            from: String::new(),
            to: String::new(),
            start_ms: 10_000,
            answer_ms: Some(10_500),
            end_ms: 70_000,
            disposition: Disposition::Answered,
            cause: Cause::NormalClearing,
            final_code: None,
            failover: false,
            failover_ms: Some(300),
            primary_skipped: false,
            attempts: Vec::new(),
        };
        c.shift(-4_000);
        assert_eq!((c.start_ms, c.answer_ms, c.end_ms, c.failover_ms), (6_000, Some(6_500), 66_000, Some(300)), "durations unchanged");
        c.shift(-10_000);
        assert_eq!(c.start_ms, 0, "never below the epoch");
    }

    #[test]
    fn json_vocabulary() {
        assert_eq!(serde_json::to_string(&Disposition::NoAnswer).ok().as_deref(), Some("\"NO ANSWER\""));
        assert_eq!(serde_json::to_string(&Cause::FarendRequireAuth).ok().as_deref(), Some("\"FAREND_REQUIRE_AUTH\""));
    }
}

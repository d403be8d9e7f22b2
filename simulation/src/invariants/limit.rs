//! Property 1: a trunk's calls in progress never exceed its limit. Counted from the PBXes, per
//! dialog (Call-ID and To tag), not per carrier call: a leg is up from the moment a PBX answered it
//! until the PBX got the BYE or gave up waiting for the ACK, or the carrier hung up or gave up.
//! Legs the carrier never saw (orphans: a late answer after the call went elsewhere) are judged by
//! `orphan.rs`, not counted here. The count is judged at every counted leg's answer.
//!
//! The limit is the one in effect when the call was admitted (its first INVITE to a PBX): the
//! scenario's, then each write of the operator (`Op::SetLimit`). A lowered limit keeps the calls
//! already up, so what is judged is every *answer*: with it, the count must not exceed the limit in
//! effect when that call was admitted (a call admitted under the old limit may be answered later,
//! after a failover). A write may take effect from when it was sent; one acknowledged is in effect
//! everywhere [`SETTLE_MS`] later: a follower that has not applied it by then has no admission lease
//! left (seed 930673: the whole cluster cut apart as the limit was lowered). Until then the higher
//! of both counts.

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;

/// How long after its acknowledgement a limit write is certainly in effect on every node: a node
/// still on the old limit then has no lease (`LEASE_MS`), plus a heartbeat's apply lag.
pub const SETTLE_MS: u64 = hatrunk_consensus::lease::LEASE_MS + 500;

pub fn check(sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let mut violations = Vec::new();
    let mut checked = 0;
    for (cid, c) in &o.calls {
        for answered in c.leg_answers() {
            checked += 1;
            let admitted = c.legs.values().flatten().map(|l| l.invite_ms).min().unwrap_or(answered);
            let n = o.count_in_progress(answered);
            let limit = limit_at(sc.limit, &o.limits, admitted);
            if n > limit {
                violations.push(format!("{n} PBX dialogs up at {answered} ms when a leg of {cid} was answered, limit {limit}"));
            }
        }
    }
    Verdict::new("calls_within_limit", "1", checked, violations)
}

/// The highest limit that may apply at `t`: the last write certainly in effect (acknowledged
/// `SETTLE_MS` before), or any later one already sent.
pub fn limit_at(base: u32, writes: &[(u64, Option<u64>, u32)], t: u64) -> u32 {
    let mut settled = base;
    let mut settled_at = 0;
    for (sent, acked, n) in writes {
        if let Some(a) = acked {
            if a + SETTLE_MS <= t && *a >= settled_at {
                settled = *n;
                settled_at = *a;
            }
        }
        let _ = sent;
    }
    let pending = writes
        .iter()
        .filter(|(sent, acked, _)| *sent <= t && acked.is_none_or(|a| a + SETTLE_MS > t || a < settled_at))
        .map(|(_, _, n)| *n)
        .max()
        .unwrap_or(0);
    settled.max(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_limit_applies_once_settled_and_either_may_apply_meanwhile() {
        let w = [(10_000, Some(10_100), 4), (20_000, None, 9)];
        assert_eq!(limit_at(12, &w, 5_000), 12);
        assert_eq!(limit_at(12, &w, 10_500), 12, "sent, not settled: the higher");
        assert_eq!(limit_at(12, &w, 10_100 + SETTLE_MS), 4);
        assert_eq!(limit_at(12, &w, 20_001), 9, "unacknowledged: may have applied");
    }
}

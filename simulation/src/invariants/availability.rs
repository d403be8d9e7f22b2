//! Availability through a lost node (issue 18): with one SIP node lost for good, the others may
//! refuse a call for want of room only while the limit is taken by their own calls, the lost
//! node's calls and what its lease let it admit beyond them, from [`GRACE_MS`] after its lease
//! certainly expired.
//!
//! What a lost node keeps is its share cut to its last lease report (`Lapse`): the calls it
//! reported plus a headroom of `batch(limit)` or six times its admissions in the renewal before.
//! That headroom may have been used by calls admitted after the report, and nobody else can tell,
//! so it stays held with the calls until `max_call_duration_s` (docs/decisions.md). The bar here
//! is that bound, computed from what the carrier saw: `held` is every call the lost node had a part
//! in that was admitted before the crash and not over by then, and the headroom is six times the
//! calls it took in the last second (an over-estimate of one renewal's worth), at least a batch.
//!
//! And once the longest call it may have (`max_call_duration_s`) is certainly over, it holds nothing:
//! from [`GRACE_MS`] after that the others may refuse only when the whole limit is theirs.
//!
//! Judged on runs whose only fault is the crash of one SIP node that never returns.

use std::collections::BTreeSet;

use super::Verdict;
use crate::oracle::CallRec;
use crate::run::Outcome;
use crate::scenario::Scenario;

/// From the lost node's lease certainly expiring to its reserve being usable elsewhere.
pub const GRACE_MS: u64 = 5_000;

pub fn check(sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let name = "capacity_back_after_node_loss";
    let [f] = o.faults.as_slice() else {
        return Verdict::new(name, "1", 0, Vec::new());
    };
    let lost = match f.down.as_slice() {
        [n] if f.what.starts_with("crash") && sc.layout.sip_nodes().any(|s| &s.name == n) => n.clone(),
        _ => return Verdict::new(name, "1", 0, Vec::new()),
    };
    let crash = f.at_ms;
    let from = crash + hatrunk_consensus::lease::LEASE_MS + GRACE_MS;
    let part_of = |c: &CallRec| c.entry == lost || c.legs.values().flatten().any(|l| l.egress == lost);
    let admitted = |c: &CallRec| c.legs.values().flatten().map(|l| l.invite_ms).min();
    let over_by = |c: &CallRec, t: u64| {
        c.ended_ms().is_some_and(|e| e <= t)
            || c.final_.is_some_and(|(at, code)| at <= t && code >= 300)
            || c.legs.values().flatten().all(|l| l.reply.is_some_and(|(at, code)| at <= t && code >= 300))
    };
    let held: BTreeSet<&String> = o
        .calls
        .iter()
        .filter(|(_, c)| part_of(c) && admitted(c).is_some_and(|a| a < crash) && !over_by(c, crash))
        .map(|(id, _)| id)
        .collect();
    let recent = o.calls.values().filter(|c| c.entry == lost && c.offered_ms + 1_000 >= crash && c.offered_ms < crash).count() as u32;
    let headroom = hatrunk_core::escrow::batch(sc.limit).max(recent * 6);
    let want = sc.limit.saturating_sub(held.len() as u32 + headroom);
    let others = |t: u64| {
        o.calls
            .iter()
            .filter(|(id, c)| !held.contains(id) && c.answered_ms().is_some_and(|a| a <= t) && c.ended_ms().is_none_or(|e| e > t))
            .count() as u32
    };
    // the leader writes the lapse LEASE_MS + DRIFT_MARGIN_MS after the last renewal it saw, and
    // the expiry the longest call's duration after the lapse
    let expired = from + hatrunk_consensus::lease::DRIFT_MARGIN_MS + crate::topology::MAX_CALL_DURATION_S * 1000;
    let all_calls =
        |t: u64| o.calls.values().filter(|c| c.answered_ms().is_some_and(|a| a <= t) && c.ended_ms().is_none_or(|e| e > t)).count() as u32;
    let mut checked = 0;
    let mut violations = Vec::new();
    for (cid, c) in o.calls.iter().filter(|(_, c)| c.entry != lost && c.offered_ms >= from && c.legs.is_empty()) {
        let Some((at, 503)) = c.final_ else { continue };
        checked += 1;
        if c.offered_ms >= expired {
            let n = all_calls(at);
            if n < sc.limit {
                violations.push(format!(
                    "{cid} refused 503 at {at} ms with {n} calls in progress: {lost} (lost at {crash} ms) can hold nothing after \
                     {expired} ms, so the limit {} was the others'",
                    sc.limit
                ));
            }
            continue;
        }
        let n = others(at);
        if n < want {
            violations.push(format!(
                "{cid} refused 503 at {at} ms with {n} other calls in progress: {lost} (lost at {crash} ms) may hold {} calls and \
                 {headroom} of headroom, so {want} of the limit {} were the others'",
                held.len(),
                sc.limit
            ));
        }
    }
    Verdict::new(name, "1", checked, violations)
}

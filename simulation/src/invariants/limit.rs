//! Property 1: a trunk's calls in progress never exceed its limit. Counted from the PBXes: a call
//! is in progress from the moment a PBX answered it until the PBX got the BYE, the carrier hung up
//! or gave up, or the PBX gave up waiting for the ACK. The count is sampled at every change as the
//! run goes.

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;

pub fn check(sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let mut violations = Vec::new();
    for (t, n) in &o.in_progress {
        if *n > sc.limit {
            violations.push(format!("{n} calls in progress at {t} ms, limit {}", sc.limit));
        }
    }
    Verdict::new("calls_within_limit", "1", o.in_progress.len(), violations)
}

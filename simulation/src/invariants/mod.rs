//! The invariants, one module per property of PRODUCT.md ("What must always hold"), judged from
//! the oracle (what the carrier, the PBXes and the operator saw) and, for leaks, from each live
//! node's own replicated state at the end. Property 6 (bad input) belongs to the fuzzing and
//! torture suites, not here.

pub mod availability;
pub mod config;
pub mod failover;
pub mod leak;
pub mod limit;
pub mod lost_update;
pub mod orphan;
pub mod outcome;
pub mod zone_down;

use crate::oracle::CallRec;
use crate::run::Outcome;
use crate::scenario::Scenario;

/// One invariant's verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub property: &'static str,
    pub checked: usize,
    pub violations: Vec<String>,
}

/// Violations kept per invariant: enough to start from (the report shows the rest of the run).
const SHOWN: usize = 5;

impl Verdict {
    fn new(name: &'static str, property: &'static str, checked: usize, mut violations: Vec<String>) -> Verdict {
        violations.truncate(SHOWN);
        Verdict { name, property, checked, violations }
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

pub fn check_all(sc: &Scenario, out: &Outcome) -> Vec<Verdict> {
    let mut v = vec![
        limit::check(sc, out),
        config::check(sc, out),
        lost_update::check(sc, out),
        leak::check(sc, out),
        failover::check(sc, out),
        zone_down::check(sc, out),
        outcome::check(sc, out),
        availability::check(sc, out),
        orphan::check(sc, out),
    ];
    if let Some(e) = &out.error {
        v.push(Verdict::new("simulation_ran", "-", 1, vec![e.clone()]));
    }
    v
}

/// When each node was out (crashed, cut off or frozen): (node, from, to), `to` the run's end if never back.
pub fn down_windows(out: &Outcome) -> Vec<(String, u64, u64)> {
    let (o, end) = (&out.oracle, out.sim_ms);
    let mut open: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for f in &o.faults {
        for n in &f.up {
            if let Some(from) = open.remove(n) {
                out.push((n.clone(), from, f.at_ms));
            } else if f.down.contains(n) {
                out.push((n.clone(), f.at_ms, f.at_ms)); // restarted in place
            }
        }
        for n in f.down.iter().filter(|n| !f.up.contains(n)) {
            open.entry(n.clone()).or_insert(f.at_ms);
        }
    }
    out.extend(open.into_iter().map(|(n, from)| (n, from, end)));
    out
}

/// Whether a PBX that took part in `c` was down (its host crashed) during the call's life: its
/// hang-up cannot complete end to end.
pub fn pbx_lost(c: &CallRec, windows: &[(String, u64, u64)]) -> bool {
    // the hang-up is in progress until its BYE is answered: up to Timer F (32 s) after it was sent
    let end = [c.hangup_ms, c.gave_up_ms, c.ended_ms()].into_iter().flatten().max().map_or(u64::MAX, |e| e + 32_000);
    windows.iter().any(|(n, a, b)| c.legs.keys().any(|p| p.host() == n) && *a <= end && *b >= c.offered_ms)
}

/// Whether any fault touched `c`: a node it went through was out, or the PBX primary misbehaved
/// in a way other than the one being judged, within its life (with `margin` ms either side).
pub fn touched(c: &CallRec, windows: &[(String, u64, u64)], margin: u64) -> bool {
    let end =
        [c.hangup_ms, c.gave_up_ms, c.final_.map(|(t, _)| t), c.moved_ms].into_iter().flatten().max().unwrap_or(c.offered_ms + 32_000);
    let (from, to) = (c.offered_ms.saturating_sub(margin), end + margin);
    let nodes: Vec<&str> = std::iter::once(c.entry.as_str()).chain(c.legs.values().flatten().map(|l| l.egress.as_str())).collect();
    windows.iter().any(|(n, a, b)| nodes.contains(&n.as_str()) && *a < to && *b > from)
}

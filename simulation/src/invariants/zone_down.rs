//! Property 5: a node, zone or region that goes down (crashed, cut off, frozen) delivers no call
//! offered 2.5 s after it went down, until it is back; and calls set up elsewhere are untouched:
//! every answered call that went through no failed node is hung up end to end (the PBX gets the BYE
//! and the carrier its 200), unless the PBX it reached lost its host meanwhile.

use super::{down_windows, pbx_lost, touched, Verdict};
use crate::run::Outcome;
use crate::scenario::Scenario;

const WITHIN_MS: u64 = 2500;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let windows = down_windows(out);
    let mut violations = Vec::new();
    let mut checked = 0;
    for (cid, c) in &o.calls {
        for leg in c.legs.values().flatten() {
            checked += 1;
            for (node, from, to) in &windows {
                if &leg.egress == node && c.offered_ms >= from + WITHIN_MS && leg.invite_ms >= from + WITHIN_MS && leg.invite_ms < *to {
                    violations.push(format!("{cid}: delivered by {node} at {} ms, down since {from} ms", leg.invite_ms));
                }
            }
        }
        if c.final_.is_some_and(|(_, code)| (200..300).contains(&code))
            && c.moved_ms.is_none()
            && !touched(c, &windows, 3000)
            && !pbx_lost(c, &windows)
            && !hangup_touched(c, &windows)
        {
            checked += 1;
            let pbx_got_bye = c.legs.values().flatten().any(|l| l.bye_ms.is_some());
            if !pbx_got_bye || c.bye_answered != Some(200) {
                violations.push(format!(
                    "{cid}: set up away from any fault, but its hang-up did not complete (PBX BYE {pbx_got_bye}, carrier {:?})",
                    c.bye_answered
                ));
            }
        }
    }
    Verdict::new("down_zone_gets_no_calls", "5", checked, violations)
}

/// Whether a node of `c` went down while its hang-up was still in progress: until the carrier's BYE
/// is answered, up to Timer F (32 s) after it was sent. A node that restarts has lost the BYE's
/// transaction, so a retransmission goes out as a new one and the PBX, whose dialog ended with the
/// first copy, rightly answers 481 (seed 900113: a one-way cut swallowed the 200, then the whole
/// cluster lost power 6 s into the hang-up).
fn hangup_touched(c: &crate::oracle::CallRec, windows: &[(String, u64, u64)]) -> bool {
    let Some(h) = c.hangup_ms else { return false };
    let nodes: Vec<&str> = std::iter::once(c.entry.as_str()).chain(c.legs.values().flatten().map(|l| l.egress.as_str())).collect();
    windows.iter().any(|(n, a, b)| nodes.contains(&n.as_str()) && *a < h + 32_000 && *b > h)
}

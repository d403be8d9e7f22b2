//! Every call ends answered, rejected with a proper code, or failed over per the policy (the
//! product's promise behind properties 1 and 4). A call the carrier did not move elsewhere gets a
//! final response; an answer at the carrier was an answer at a PBX; a refusal is a final failure
//! code, and a Primary's non-failover refusal (486 Busy, ...) reaches the carrier unchanged. Calls
//! a fault touched may end without an answer (the node they were on was gone).

use super::{down_windows, touched, Verdict};
use crate::oracle::Pbx;
use crate::run::Outcome;
use crate::scenario::Scenario;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let windows = down_windows(out);
    let mut violations = Vec::new();
    let mut checked = 0;
    for (cid, c) in &o.calls {
        if c.moved_ms.is_some() {
            continue;
        }
        checked += 1;
        let spared = !touched(c, &windows, 3000) && !answer_died(c, &windows);
        match c.final_ {
            None if spared => violations.push(format!("{cid}: offered at {} ms to {}, never got a final response", c.offered_ms, c.entry)),
            None => {}
            // not a guard: a 2xx that was answered must not fall through to the arms below
            #[allow(clippy::collapsible_match)]
            Some((_, code)) if (200..300).contains(&code) => {
                if c.answered_ms().is_none() {
                    violations.push(format!("{cid}: the carrier got {code} but no PBX answered"));
                }
            }
            Some((_, code)) if !(300..700).contains(&code) => violations.push(format!("{cid}: ended with {code}")),
            Some((_, code)) => {
                let p = c.legs.get(&Pbx::Primary).and_then(|l| l.first()).and_then(|l| l.reply).map(|(_, c)| c);
                let went_on = c.legs.contains_key(&Pbx::Secondary);
                if let Some(pc) = p {
                    if spared && !went_on && !(200..300).contains(&pc) && pc != code {
                        violations.push(format!("{cid}: the Primary refused with {pc} and the carrier got {code}"));
                    }
                }
            }
        }
    }
    Verdict::new("every_call_ends_properly", "1, 4", checked, violations)
}

/// A PBX answered 2xx, got no ACK, and its host went down within Timer H (32 s) of the answer: a
/// proxy does not retransmit a 2xx (RFC 3261 section 16.7), the UAS does, so when the first copy was
/// lost on the way nobody can send the carrier its final response (seed 900024: 12% loss on the edge,
/// the Primary's host crashed 650 ms after answering).
fn answer_died(c: &crate::oracle::CallRec, windows: &[(String, u64, u64)]) -> bool {
    c.legs.iter().any(|(pbx, legs)| {
        legs.iter().any(|l| match l.reply {
            Some((t, code)) if (200..300).contains(&code) && l.ack_ms.is_none() => {
                windows.iter().any(|(n, a, _)| n == pbx.host() && *a >= t && *a <= t + 32_000)
            }
            _ => false,
        })
    })
}

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
        let spared = !touched(c, &windows, 3000);
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

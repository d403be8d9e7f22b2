//! Property 2: a configuration change that was acknowledged is never lost. At the end (faults
//! healed, every crashed node restarted), every live node's replicated state holds every trunk the
//! API acknowledged.

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let mut violations = Vec::new();
    let acked = &out.oracle.config_acked;
    if out.node_states.is_empty() {
        violations.push("no node was running at the end".into());
    }
    for (node, st) in &out.node_states {
        for (id, at) in acked {
            if !st.trunks.contains(id) {
                violations.push(format!("{node} lost {id}, acknowledged at {at} ms"));
            }
        }
    }
    if acked.is_empty() {
        violations.push("the trunk was never acknowledged".into());
    }
    Verdict::new("acknowledged_config_kept", "2", acked.len() * out.node_states.len(), violations)
}

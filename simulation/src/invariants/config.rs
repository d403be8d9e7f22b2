//! Property 2: a configuration change that was acknowledged is never lost. At the end (faults
//! healed, every crashed node restarted), every live node's replicated state holds every trunk the
//! API acknowledged, unless the operator sent a delete of it later and no write of it was
//! acknowledged after that delete: a delete whose answer was lost may have committed (seed
//! 2200066: the delete of `delete-recreate` timed out under 200 ms links and an isolation, so the
//! re-create was never sent, and the delete had committed).

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let mut violations = Vec::new();
    let o = &out.oracle;
    let acked = &o.config_acked;
    let last_delete = o.trunk_deleted.iter().max().copied();
    // no write of the trunk acknowledged after its last delete was sent: it may be gone
    let may_be_gone = |id: &str| {
        id == crate::topology::TRUNK && last_delete.is_some_and(|d| !o.limits.iter().any(|(_, acked, _)| acked.is_some_and(|a| a > d)))
    };
    if out.node_states.is_empty() {
        violations.push("no node was running at the end".into());
    }
    for (node, st) in &out.node_states {
        for (id, at) in acked {
            if !st.trunks.contains(id) && !may_be_gone(id) {
                violations.push(format!("{node} lost {id}, acknowledged at {at} ms"));
            }
        }
    }
    if acked.is_empty() {
        violations.push("the trunk was never acknowledged".into());
    }
    Verdict::new("acknowledged_config_kept", "2", acked.len() * out.node_states.len(), violations)
}

//! Property 2, the half about order: an acknowledged configuration change is never overwritten by
//! a delayed older write. A write that read the trunk at a revision since replaced
//! (`Op::StaleWrite`) must be refused, and every member must end with the main trunk as last
//! acknowledged (or as a write sent after that, whose answer was lost).

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;
use crate::topology::TRUNK;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let o = &out.oracle;
    let mut violations: Vec<String> = o.stale_acked.clone();
    let last_acked = o.limits.iter().filter(|(_, a, _)| a.is_some()).max_by_key(|(_, a, _)| *a);
    if let Some((sent, _, n)) = last_acked {
        let later: Vec<u32> = o.limits.iter().filter(|(s, a, _)| a.is_none() && s >= sent).map(|(_, _, n)| *n).collect();
        for (node, st) in &out.node_states {
            match st.limit {
                Some(l) if l == *n || later.contains(&l) => {}
                other => violations.push(format!(
                    "{node}: {TRUNK} ends with limit {other:?}, the last acknowledged write set {n} (later unanswered: {later:?})"
                )),
            }
        }
    }
    let checked = if o.limits.is_empty() { 0 } else { out.node_states.len() + o.limits.len() };
    Verdict::new("no_lost_update", "2", checked, violations)
}

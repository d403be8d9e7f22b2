//! Property 3: no slot is leaked. Once every call has ended and the faults have healed, every live
//! node that applied the whole log shows no slot and no escrow share held for the trunk (shares go
//! back after a second without calls), and the carrier has no call left open.

use super::Verdict;
use crate::run::Outcome;
use crate::scenario::Scenario;
use crate::topology::TRUNK;

pub fn check(_sc: &Scenario, out: &Outcome) -> Verdict {
    let mut violations = Vec::new();
    // the ledger as committed: nodes that applied the whole log (one that replication could not
    // reach for the last seconds, behind a link slower than the Raft timeouts, holds an old copy)
    let top = out.node_states.values().map(|st| st.applied).max().unwrap_or(0);
    for (node, st) in out.node_states.iter().filter(|(_, st)| st.applied == top) {
        if st.slots > 0 || st.shares > 0 {
            violations.push(format!(
                "{node}: {} slots and {} shares of {TRUNK} still held at the end ({}, applied {})",
                st.slots, st.shares, st.ledger, st.applied
            ));
        }
    }
    // a PBX whose host crashed forgot the calls it had answered: they ended there (seed 930241)
    let windows = super::down_windows(out);
    let open = out
        .oracle
        .calls
        .iter()
        .filter(|(_, c)| c.answered_ms().is_some() && c.ended_ms().is_none() && !super::pbx_lost(c, &windows))
        .count();
    if open > 0 {
        violations.push(format!("{open} answered calls never ended"));
    }
    Verdict::new("no_slot_leaked", "3", out.node_states.len(), violations)
}

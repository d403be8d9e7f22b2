//! Membership policy, decided here rather than at the API edge: who may join (a node that already
//! belongs to another cluster, a second node with a member's name, a member's id at a new address are
//! refused), who takes over when the leader is asked to remove itself, what a removal holds back,
//! and the members' status as the CLI shows it. Health is an input (the node's failure detector), so
//! the decisions stay pure and the simulation's clock is the only clock.

use std::collections::BTreeSet;

use openraft::Membership;

use crate::error::ConsensusError;
use crate::raft::{Consensus, RaftTiming};
use crate::types::{Command, NodeInfo};

/// One member as the CLI lists it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub id: u64,
    pub info: NodeInfo,
    pub voter: bool,
    pub leader: bool,
    /// From the caller's failure detector: it answers heartbeats and reaches a majority.
    pub healthy: bool,
    /// Entries behind the leader's last; -1 when unknown (this node is not the leader).
    pub lag: i64,
}

/// The cluster as this member sees it.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// openraft 0.9 does not export the commit index; applied trails it only by entries in flight.
    pub applied_index: u64,
    pub initialized: bool,
    pub members: Vec<MemberStatus>,
}

/// What a removal asked of the leader did.
#[derive(Debug, Clone)]
pub enum Removal {
    Removed(NodeInfo),
    /// The leader was asked to remove itself: it handed leadership to this voter, which must do it.
    HandedOff(u64),
}

/// May node `id`, which says it is `info` (and `initialized`: it already has a cluster), join?
pub fn check_join(m: &Membership<u64, NodeInfo>, id: u64, info: &NodeInfo, initialized: bool, addr: &str) -> Result<(), String> {
    if initialized && m.get_node(&id).is_none() {
        return Err(format!(
            "node {id} at {addr} already belongs to a cluster (set [cluster] bootstrap = false and start it with an empty data_dir)"
        ));
    }
    if let Some((other, _)) = m.nodes().find(|(oid, n)| **oid != id && n.name == info.name) {
        return Err(format!("node name {} is already used by node {other}", info.name));
    }
    if let Some(existing) = m.get_node(&id) {
        if existing.cluster_addr != info.cluster_addr {
            return Err(format!("node id {id} is already a member at {}", existing.cluster_addr));
        }
    }
    Ok(())
}

/// The voter that takes over from leader `me` before it is removed: an answering one first, then the
/// lowest id; `None` when `me` is the last voter.
pub fn handoff_target(m: &Membership<u64, NodeInfo>, me: u64, alive: impl Fn(u64) -> bool) -> Option<u64> {
    let mut others: Vec<u64> = m.voter_ids().filter(|v| *v != me).collect();
    others.sort_by_key(|v| !alive(*v)); // stable: ids stay in order within each group
    others.first().copied()
}

impl Consensus {
    /// Add the node serving `addr`, after asking it who it is and checking it may join. Leader only.
    pub async fn join(&self, addr: &str, learner: bool) -> Result<(u64, NodeInfo), ConsensusError> {
        let (id, info, initialized) = self.peer_info(addr).await.map_err(ConsensusError::Invalid)?;
        let m = self.raft.metrics().borrow().membership_config.membership().clone();
        check_join(&m, id, &info, initialized, addr).map_err(ConsensusError::Refused)?;
        self.add_node(id, info.clone(), learner).await?;
        // a node removed earlier may renew its lease again (the lease watch does it too, if this fails)
        if let Err(e) = self.write(Command::Rejoin { node: info.name.clone() }).await {
            tracing::warn!(node = id, error = %e, "rejoin not recorded yet; the lease watch retries");
        }
        Ok((id, info))
    }

    /// Remove member `id`. Leader only. The leader removing itself would step down as the change
    /// commits, losing the answer and the release that follows; so it hands leadership to another
    /// voter ([`handoff_target`]) and the caller asks that one. A removed node's calls are still up
    /// at the carrier and the PBX, so its lease is retired: its share is cut to what it last
    /// reported keeping for calls, and those slots go back when the longest call is over
    /// (`lease.rs`), never at once.
    pub async fn remove_member(&self, id: u64, alive: impl Fn(u64) -> bool, timing: &RaftTiming) -> Result<Removal, ConsensusError> {
        if id == self.id {
            let m = self.raft.metrics().borrow().membership_config.membership().clone();
            let target = handoff_target(&m, id, alive)
                .ok_or_else(|| ConsensusError::Refused(format!("node {id} is the last voter; removing it would end the cluster")))?;
            self.transfer_leader(target, timing).await?;
            return Ok(Removal::HandedOff(target));
        }
        let info = self.remove_node(id).await?;
        if let Err(e) = self.write(Command::Retire { node: info.name.clone() }).await {
            tracing::warn!(node = id, error = %e, "removed node's lease not retired yet; the lease watch retries until it is");
        }
        Ok(Removal::Removed(info))
    }

    /// The members and their state as this member sees them, health from `healthy`.
    pub async fn status(&self, healthy: impl Fn(u64) -> bool) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                info: info.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
                healthy: healthy(*id),
                lag: match &m.replication {
                    Some(r) => r.get(id).map(|matched| last as i64 - matched.map(|l| l.index as i64).unwrap_or(-1)).unwrap_or(-1),
                    None => -1,
                },
            })
            .collect();
        ClusterStatus {
            leader: m.current_leader,
            term: m.current_term,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            initialized: self.is_initialized().await,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(name: &str, addr: &str) -> NodeInfo {
        NodeInfo { name: name.into(), cluster_addr: addr.into(), ..NodeInfo::default() }
    }

    fn three() -> Membership<u64, NodeInfo> {
        let nodes = BTreeMap::from([(1, node("n1", "a1")), (2, node("n2", "a2")), (3, node("n3", "a3"))]);
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    #[test]
    fn a_join_is_refused_for_a_foreign_cluster_a_taken_name_or_a_moved_id() {
        let m = three();
        assert!(check_join(&m, 4, &node("n4", "a4"), false, "a4").is_ok());
        assert!(check_join(&m, 2, &node("n2", "a2"), true, "a2").is_ok(), "a member joining again is fine");
        assert!(check_join(&m, 4, &node("n4", "a4"), true, "a4").expect_err("refused").contains("already belongs to a cluster"));
        assert!(check_join(&m, 4, &node("n1", "a4"), false, "a4").expect_err("refused").contains("already used by node 1"));
        assert!(check_join(&m, 2, &node("n2", "a9"), false, "a9").expect_err("refused").contains("already a member at a2"));
    }

    #[test]
    fn the_leader_hands_off_to_an_answering_voter_and_never_past_the_last() {
        let m = three();
        assert_eq!(handoff_target(&m, 1, |_| true), Some(2));
        assert_eq!(handoff_target(&m, 1, |v| v == 3), Some(3));
        assert_eq!(handoff_target(&m, 1, |_| false), Some(2));
        let alone = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node("n1", "a1"))]));
        assert_eq!(handoff_target(&alone, 1, |_| true), None);
    }
}

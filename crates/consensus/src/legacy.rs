//! Snapshots written before format 2 (2026-11-30), which had no fences: read once at open or
//! install, converted, and never written again. Every trunk they hold starts at its own revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hatrunk_core::escrow::Shares;
use hatrunk_core::pool::Pool;
use hatrunk_core::trunk::Trunk;
use openraft::{LogId, StoredMembership};
use serde::Deserialize;

use crate::fence::Fences;
use crate::sm_store::SmData;
use crate::state::{ClusterState, Registration};
use crate::types::{CommandResult, NodeInfo, Secret};

/// The snapshot content of format 1, field for field.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct SmDataV1 {
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, NodeInfo>,
    state: ClusterStateV1,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct ClusterStateV1 {
    #[serde(with = "crate::trunk_wire::map")]
    trunks: BTreeMap<String, Arc<Trunk>>,
    numbers: BTreeMap<String, String>,
    pool: Pool,
    shares: Shares,
    registrations: BTreeMap<String, Registration>,
    cluster_secret: Option<Secret>,
    dedup: HashMap<u64, BTreeMap<u64, CommandResult>>,
}

impl From<SmDataV1> for SmData {
    fn from(v: SmDataV1) -> SmData {
        let s = v.state;
        let fences = Fences::from_trunks(s.trunks.keys());
        SmData {
            last_applied: v.last_applied,
            last_membership: v.last_membership,
            state: ClusterState {
                trunks: s.trunks,
                numbers: s.numbers,
                pool: s.pool,
                shares: s.shares,
                registrations: s.registrations,
                cluster_secret: s.cluster_secret,
                dedup: s.dedup,
                fences,
                leases: Default::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node upgraded in place opens the snapshot its earlier release wrote.
    #[test]
    fn a_format_1_snapshot_reads_with_every_trunk_at_a_revision() {
        let t = hatrunk_core::trunk::parse_trunk(
            "id = \"a\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 3\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\n",
        )
        .expect("trunk");
        let mut shares = Shares::default();
        shares.reserve("a", "n1", 2, 3);
        let old = SmDataV1 {
            last_applied: None,
            last_membership: StoredMembership::default(),
            state: ClusterStateV1 {
                trunks: [("a".to_string(), Arc::new(t))].into(),
                numbers: [("100".to_string(), "a".to_string())].into(),
                pool: Pool::default(),
                shares,
                registrations: BTreeMap::new(),
                cluster_secret: Some(Secret("s".into())),
                dedup: HashMap::new(),
            },
        };
        let bytes = bincode::serialize(&old).expect("encode");
        let now = crate::sm_store::decode(&bytes).expect("format 1 decodes");
        assert_eq!(now.state.fences.revision("a"), 1);
        assert_eq!(now.state.shares.share("a", "n1"), 2);
        assert_eq!(now.state.numbers.get("100").map(String::as_str), Some("a"));
        let mut again = crate::sm_store::decode(&bytes).expect("decode");
        assert_eq!(again.state.fences.bump("a"), 2);
    }
}

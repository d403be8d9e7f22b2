//! The openraft type configuration and what travels through the log: [`Request`] (a [`Command`]
//! tagged with a client id and serial, so a retried command is applied once) and [`Response`].

use std::fmt;
use std::io::Cursor;

use hatrunk_core::pool::Decision;
use hatrunk_core::trunk::Trunk;

pub use crate::fence::Expect;
use serde::{Deserialize, Serialize};

/// A cluster member as Raft membership records it: who it is, where it is, how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub role: NodeRole,
    /// Cluster gRPC address (`host:port`).
    pub cluster_addr: String,
    /// SIP address (`host:port`), empty for a witness.
    pub sip_addr: String,
}

/// What a member does. Stored as its name (`sip`, `witness`), exactly as the string it replaced, so
/// membership written by earlier releases reads back unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum NodeRole {
    /// Takes calls, votes and stores.
    #[default]
    Sip,
    /// Votes and stores, runs no SIP: the tie-breaker zone or region.
    Witness,
}

impl NodeRole {
    pub fn parse(s: &str) -> Option<NodeRole> {
        match s {
            "sip" => Some(NodeRole::Sip),
            "witness" => Some(NodeRole::Witness),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Sip => "sip",
            NodeRole::Witness => "witness",
        }
    }
}

impl From<NodeRole> for String {
    fn from(r: NodeRole) -> String {
        r.as_str().to_string()
    }
}

impl TryFrom<String> for NodeRole {
    type Error = String;
    fn try_from(s: String) -> Result<NodeRole, String> {
        NodeRole::parse(&s).ok_or_else(|| format!("unknown node role {s:?}"))
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} ({}/{}, {})", self.name, self.cluster_addr, self.region, self.zone, self.role)
    }
}

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a validated trunk (refused if one of its numbers belongs to another trunk).
    PutTrunk(#[serde(with = "crate::trunk_wire::boxed")] Box<Trunk>),
    DeleteTrunk(String),
    /// Take a slot of `trunk` for the call `slot` (idempotent per slot). Per-call admission came
    /// before escrow shares; the node no longer issues it (nor `Release`). Both stay: logs written
    /// by those releases must replay, and `benches/admission.sh` measures a Raft write per call
    /// with them, the baseline escrow is compared against.
    Admit {
        trunk: String,
        slot: String,
    },
    Release {
        slot: String,
    },
    /// Give back every slot held by calls of `node` (slot names start with the node name) and
    /// its escrow shares.
    ReleaseNode {
        node: String,
    },
    /// A restarted `node` keeps the shares its previous life held (its calls may still be up) and
    /// learns them: answered with [`CommandResult::Inherited`].
    Inherit {
        node: String,
    },
    /// Grant `node` up to `want` more of `trunk`'s pool as its escrow share (see core::escrow).
    Reserve {
        trunk: String,
        node: String,
        want: u32,
    },
    /// `node` keeps at most `to` of its share of `trunk` (idempotent).
    Shrink {
        trunk: String,
        node: String,
        to: u32,
    },
    /// A Digest account's live binding, so any node can deliver to it.
    Register {
        username: String,
        contact: String,
        /// Where calls are sent (`udp:IP:PORT` / `tcp:IP:PORT`): the Contact, or the REGISTER's source
        /// when the PBX is behind NAT. `expires_ms` is wall-clock; 0 removes the binding.
        route: String,
        expires_ms: u64,
    },
    /// The cluster's shared secret (nodes sign the calls they forward to each other with it); the
    /// first one committed stays. It travels only over the cluster's mutual TLS.
    SetClusterSecret {
        secret: Secret,
    },
    // Variants below came with format 2 (2026-11-30); new variants go at the end, so entries
    // written earlier decode as what they were.
    /// Store a validated trunk if it is still at the revision the writer read
    /// ([`CommandResult::Revision`] or [`CommandResult::Stale`]).
    PutTrunkIf {
        #[serde(with = "crate::trunk_wire::boxed")]
        trunk: Box<Trunk>,
        expect: Expect,
    },
    /// Delete a trunk; refused while the ledger holds slots of it, unless `force`. Its shares stay
    /// either way: the calls they cover are still up and count until they end.
    DeleteTrunkIf {
        id: String,
        force: bool,
    },
    /// A (re)started `node`: the ledger gives it its next boot epoch and what its earlier lives
    /// hold ([`CommandResult::Booted`]); share changes of earlier epochs are refused from now on.
    Boot {
        node: String,
    },
    /// [`Command::Reserve`] from the process of `epoch`.
    ReserveAt {
        trunk: String,
        node: String,
        want: u32,
        epoch: u64,
    },
    /// [`Command::Shrink`] from the process of `epoch`.
    ShrinkAt {
        trunk: String,
        node: String,
        to: u32,
        epoch: u64,
    },
    /// A call set up by an earlier life of `node` ended (its BYE passed): one slot of its share of
    /// `trunk` goes back, once per `call` whatever the restarts and retransmissions in between
    /// ([`CommandResult::Ended`] says whether this one counted).
    EndInherited {
        node: String,
        trunk: String,
        call: String,
        epoch: u64,
    },
    /// `node`'s lease renewal: per trunk, the most it may hold for calls until its next renewal
    /// (see `lease.rs`). Answered with [`CommandResult::Renewed`] or [`CommandResult::Removed`].
    Renew {
        node: String,
        epoch: u64,
        keep: Vec<(String, u32)>,
    },
    /// The leader saw renewal `seq` of `node` run out: its shares are cut to what it kept.
    Lapse {
        node: String,
        seq: u64,
    },
    /// The longest call of a lapsed or removed `node` is over: every share of it goes back.
    Expire {
        node: String,
        seq: u64,
    },
    /// `node` was removed: it renews no more; its shares are cut to what it kept, and its calls'
    /// slots wait for [`Command::Expire`] (replaces [`Command::ReleaseNode`], which freed them at once).
    Retire {
        node: String,
    },
    /// `node` was added again after a removal: it may renew.
    Rejoin {
        node: String,
    },
    /// `node` takes no new calls while `on` (a drain before its removal).
    Drain {
        node: String,
        on: bool,
    },
}

/// A secret whose `Debug` does not show it (commands are logged with `{:?}`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A command with its client identity, for exactly-once application of retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who sent it (a node id or CLI session); 0 means "no de-duplication".
    pub client: u64,
    /// Increasing per client.
    pub serial: u64,
    pub command: Command,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{} {:?}", self.client, self.serial, self.command)
    }
}

/// What applying a command gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    Admission(Decision),
    /// How much of a share a [`Command::Reserve`] granted.
    Reserved(u32),
    /// What [`Command::Inherit`] found: the node's share per trunk.
    Inherited(Vec<(String, u32)>),
    /// The command was valid Raft-wise but refused by the state (e.g. a number already taken).
    Refused(String),
    /// The trunk the command names does not exist (its id; results recorded by releases before
    /// 2026-11 hold the message "trunk <id> not found" instead, and only a retried command sees those).
    NotFound(String),
    /// A trunk write applied: the trunk's new revision.
    Revision(u64),
    /// A conditional trunk write found the trunk at another revision (0: it does not exist).
    Stale {
        trunk: String,
        current: u64,
    },
    /// What [`Command::Boot`] gave: the node's epoch and its share per trunk.
    Booted {
        epoch: u64,
        held: Vec<(String, u32)>,
    },
    /// Whether an [`Command::EndInherited`] gave a slot back.
    Ended(bool),
    /// A renewal applied: whether the lease had lapsed (then `shares` are the node's shares now,
    /// cut meanwhile) and whether the node is draining.
    Renewed {
        lapsed: bool,
        draining: bool,
        shares: Vec<(String, u32)>,
    },
    /// The node was removed from the cluster: no lease.
    Removed(String),
    /// A share change from an earlier process of the node (its epoch), refused.
    Fenced {
        node: String,
        epoch: u64,
        current: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub result: Option<CommandResult>,
}

openraft::declare_raft_types!(
    /// hatrunk's Raft types: u64 node ids, [`NodeInfo`] members, bincode snapshots in memory.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::rt::Runtime,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Membership written by releases where the role was a string must read back, and be written
    /// the same way: a rolling upgrade has both in one cluster.
    #[test]
    fn a_role_is_stored_as_the_string_it_replaced() {
        #[derive(Serialize, Deserialize)]
        struct Before {
            name: String,
            region: String,
            zone: String,
            role: String,
            cluster_addr: String,
            sip_addr: String,
        }
        for (text, role) in [("sip", NodeRole::Sip), ("witness", NodeRole::Witness)] {
            let old = Before {
                name: "n".into(),
                region: "r".into(),
                zone: "z".into(),
                role: text.into(),
                cluster_addr: "a:1".into(),
                sip_addr: String::new(),
            };
            let bytes = bincode::serialize(&old).expect("encode");
            let now: NodeInfo = bincode::deserialize(&bytes).expect("decode");
            assert_eq!(now.role, role);
            assert_eq!(bincode::serialize(&now).expect("encode"), bytes);
        }
        let odd = Before {
            name: "n".into(),
            region: "r".into(),
            zone: "z".into(),
            role: "router".into(),
            cluster_addr: "a".into(),
            sip_addr: String::new(),
        };
        let err = bincode::deserialize::<NodeInfo>(&bincode::serialize(&odd).expect("encode")).expect_err("refused");
        assert!(err.to_string().contains("unknown node role \"router\""), "{err}");
    }
}

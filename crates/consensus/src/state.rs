//! The replicated state: trunks and their number index, the pool, Digest registrations, and the
//! de-duplication table. `apply` is pure and deterministic: every replica computes the same result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hatrunk_core::cps::rate_trunk;
use hatrunk_core::escrow::Shares;
use hatrunk_core::pool::Pool;
use hatrunk_core::trunk::{check_numbers_free, Trunk};
use serde::{Deserialize, Serialize};

use crate::fence::{Expect, Fences};
use crate::lease::{Leases, NoLease};
use crate::types::{Command, CommandResult, Request, Secret};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub contact: String,
    pub route: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Shared, so the call path takes a trunk per call without copying it.
    #[serde(with = "crate::trunk_wire::map")]
    pub trunks: BTreeMap<String, Arc<Trunk>>,
    pub numbers: BTreeMap<String, String>,
    pub pool: Pool,
    /// Each node's escrow share of each trunk's pool (what nodes admit from locally).
    pub shares: Shares,
    pub registrations: BTreeMap<String, Registration>,
    /// See [`Command::SetClusterSecret`].
    pub cluster_secret: Option<Secret>,
    /// client -> recent serials and their results. A window, not a "last serial": one client has
    /// many writes in flight and they may commit in any order.
    pub(crate) dedup: HashMap<u64, BTreeMap<u64, CommandResult>>,
    /// Trunk revisions, boot epochs, ended calls of earlier lives (format 2).
    pub fences: Fences,
    /// Admission leases (format 2).
    pub leases: Leases,
}

/// Results remembered per client; a retry older than this many newer writes is refused.
pub const DEDUP_WINDOW: usize = 4096;

impl ClusterState {
    /// Apply one request. A request whose serial is not above the client's last one is a retry:
    /// it returns the recorded result and changes nothing.
    pub fn apply(&mut self, req: &Request) -> CommandResult {
        if req.client == 0 {
            return self.apply_command(&req.command);
        }
        if let Some(seen) = self.dedup.get(&req.client) {
            if let Some(result) = seen.get(&req.serial) {
                return result.clone();
            }
            if seen.len() >= DEDUP_WINDOW && seen.keys().next().is_some_and(|oldest| req.serial < *oldest) {
                return CommandResult::Refused(format!(
                    "request {} of client {} is too old to tell whether it was applied",
                    req.serial, req.client
                ));
            }
        }
        let result = self.apply_command(&req.command);
        let seen = self.dedup.entry(req.client).or_default();
        seen.insert(req.serial, result.clone());
        while seen.len() > DEDUP_WINDOW {
            seen.pop_first();
        }
        result
    }

    fn apply_command(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            // the legacy forms keep their results and effects exactly (replicas that applied them
            // before computed these); they bump revisions too
            Command::PutTrunk(t) => match self.put_trunk(t, Expect::Any) {
                CommandResult::Revision(_) => CommandResult::Ok,
                other => other,
            },
            Command::DeleteTrunk(id) => {
                self.shares.forget_trunk(id);
                if self.remove_trunk(id) {
                    self.fences.deleted(id);
                    CommandResult::Ok
                } else {
                    CommandResult::NotFound(id.clone())
                }
            }
            Command::PutTrunkIf { trunk, expect } => self.put_trunk(trunk, *expect),
            Command::DeleteTrunkIf { id, force } => self.delete_trunk(id, *force),
            Command::Boot { node } => {
                let epoch = self.fences.boot(node);
                self.drop_tokens(node);
                let held = self.shares.inherit(node);
                self.leases.boot(node, held.iter().cloned().collect());
                CommandResult::Booted { epoch, held }
            }
            Command::Renew { node, epoch, keep } => match self.fenced(node, *epoch) {
                Some(refused) => refused,
                None => match self.leases.renew(node, keep.iter().cloned().collect()) {
                    Ok((lapsed, draining)) => {
                        let shares = if lapsed { self.shares_of(node) } else { Vec::new() };
                        CommandResult::Renewed { lapsed, draining, shares }
                    }
                    Err(NoLease::Retired) => CommandResult::Removed(node.clone()),
                },
            },
            Command::Lapse { node, seq } => {
                if let Some(keep) = self.leases.lapse(node, *seq) {
                    self.cut_shares(node, &keep);
                }
                CommandResult::Ok
            }
            Command::Expire { node, seq } => {
                if self.leases.expire(node, *seq) {
                    self.shares.release_node(node);
                }
                CommandResult::Ok
            }
            Command::Retire { node } => {
                let keep = self.leases.retire(node);
                self.cut_shares(node, &keep);
                CommandResult::Ok
            }
            Command::Rejoin { node } => {
                self.leases.rejoin(node);
                CommandResult::Ok
            }
            Command::Drain { node, on } => {
                self.leases.set_draining(node, *on);
                CommandResult::Ok
            }
            Command::ReserveAt { trunk, node, want, epoch } => match self.fenced(node, *epoch) {
                Some(refused) => refused,
                None => self.apply_command(&Command::Reserve { trunk: trunk.clone(), node: node.clone(), want: *want }),
            },
            Command::ShrinkAt { trunk, node, to, epoch } => match self.fenced(node, *epoch) {
                Some(refused) => refused,
                None => {
                    self.shares.shrink(trunk, node, *to);
                    CommandResult::Ok
                }
            },
            Command::EndInherited { node, trunk, call, epoch } => match self.fenced(node, *epoch) {
                Some(refused) => refused,
                None => {
                    let held = self.shares.share(trunk, node);
                    let counted = held > 0 && self.fences.end_call(node, call);
                    if counted {
                        self.shares.shrink(trunk, node, held - 1);
                    }
                    CommandResult::Ended(counted)
                }
            },
            Command::Admit { trunk, slot } => match self.trunks.get(trunk) {
                Some(t) => CommandResult::Admission(self.pool.admit(trunk, t.max_concurrent_calls, slot)),
                None => CommandResult::NotFound(trunk.clone()),
            },
            Command::Release { slot } => {
                self.pool.release(slot);
                CommandResult::Ok
            }
            Command::ReleaseNode { node } => {
                let prefix = format!("{node}/");
                for slot in self.pool.holders_with_prefix(&prefix) {
                    self.pool.release(&slot);
                }
                self.shares.release_node(node);
                self.fences.removed(node);
                CommandResult::Ok
            }
            Command::Inherit { node } => CommandResult::Inherited(self.shares.inherit(node)),
            Command::Reserve { trunk, node, want } => match self.limit_of(trunk) {
                Some(limit) => {
                    let room = limit.saturating_sub(self.pool.used(trunk));
                    CommandResult::Reserved(self.shares.reserve(trunk, node, *want, room))
                }
                None => CommandResult::NotFound(trunk.clone()),
            },
            Command::Shrink { trunk, node, to } => {
                self.shares.shrink(trunk, node, *to);
                CommandResult::Ok
            }
            Command::Register { username, contact, route, expires_ms } => {
                if *expires_ms == 0 {
                    self.registrations.remove(username);
                } else {
                    self.registrations
                        .insert(username.clone(), Registration { contact: contact.clone(), route: route.clone(), expires_ms: *expires_ms });
                }
                CommandResult::Ok
            }
            Command::SetClusterSecret { secret } => {
                if self.cluster_secret.is_none() && !secret.0.is_empty() {
                    self.cluster_secret = Some(secret.clone());
                }
                CommandResult::Ok
            }
        }
    }

    /// `node`'s shares per trunk.
    pub fn shares_of(&self, node: &str) -> Vec<(String, u32)> {
        self.shares.trunks_of(node).into_iter().map(|t| (t.clone(), self.shares.share(&t, node))).collect()
    }

    /// Cut `node`'s shares to what it kept at its last renewal (a trunk it did not name: to 0; a
    /// rate pool: to 0, its tokens are back, see `hatrunk_core::cps`).
    fn cut_shares(&mut self, node: &str, keep: &std::collections::BTreeMap<String, u32>) {
        for t in self.shares.trunks_of(node) {
            let kept = if rate_trunk(&t).is_some() { 0 } else { keep.get(&t).copied().unwrap_or(0) };
            self.shares.shrink(&t, node, kept);
        }
    }

    /// A restarted node holds no tokens: its previous life's went back a second after its last call.
    fn drop_tokens(&mut self, node: &str) {
        for t in self.shares.trunks_of(node) {
            if rate_trunk(&t).is_some() {
                self.shares.shrink(&t, node, 0);
            }
        }
    }

    /// The most the ledger may hold under `key`: a trunk's concurrent-call limit, or the calls per
    /// second of its rate pool (0 if it has none). `None`: no such trunk.
    pub fn limit_of(&self, key: &str) -> Option<u32> {
        match rate_trunk(key) {
            Some(trunk) => self.trunks.get(trunk).map(|t| t.max_calls_per_second.unwrap_or(0)),
            None => self.trunks.get(key).map(|t| t.max_concurrent_calls),
        }
    }

    /// A share change from a process of `node` older than its current boot: refused.
    fn fenced(&self, node: &str, epoch: u64) -> Option<CommandResult> {
        (!self.fences.current(node, epoch)).then(|| CommandResult::Fenced {
            node: node.to_string(),
            epoch,
            current: self.fences.epoch(node),
        })
    }

    fn put_trunk(&mut self, t: &Trunk, expect: Expect) -> CommandResult {
        if !self.fences.allows(&t.id, expect) {
            return CommandResult::Stale { trunk: t.id.clone(), current: self.fences.revision(&t.id) };
        }
        let numbers = &self.numbers;
        if let Err(e) = check_numbers_free(t, |n| numbers.get(n).map(String::as_str)) {
            return CommandResult::Refused(e.to_string());
        }
        self.remove_trunk(&t.id);
        for n in &t.numbers {
            self.numbers.insert(n.clone(), t.id.clone());
        }
        self.trunks.insert(t.id.clone(), Arc::new(t.clone()));
        CommandResult::Revision(self.fences.bump(&t.id))
    }

    /// Slots of `trunk` the ledger holds: every node's share (its calls in progress and a reserve
    /// it gives back within a second of its last call) and per-call slots.
    pub fn held(&self, trunk: &str) -> u32 {
        self.shares.total(trunk) + self.pool.used(trunk)
    }

    /// The shares of a deleted trunk stay: its calls are still up at the carrier and the PBX and
    /// keep counting if a trunk of the same id comes back; each node gives its share back as they end.
    fn delete_trunk(&mut self, id: &str, force: bool) -> CommandResult {
        if !self.trunks.contains_key(id) {
            return CommandResult::NotFound(id.to_string());
        }
        let held = self.held(id);
        if held > 0 && !force {
            return CommandResult::Refused(format!(
                "trunk {id} has {held} slot(s) held by calls in progress (a node also keeps a reserve for about a second after its last call); \
                 delete it with --force to stop taking its calls: those up stay counted until they end"
            ));
        }
        self.remove_trunk(id);
        self.fences.deleted(id);
        CommandResult::Ok
    }

    fn remove_trunk(&mut self, id: &str) -> bool {
        match self.trunks.remove(id) {
            Some(old) => {
                for n in &old.numbers {
                    self.numbers.remove(n);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
#[path = "state_rate_tests.rs"]
mod rate_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use hatrunk_core::pool::Decision;

    fn trunk(id: &str, number: &str, limit: u32) -> Trunk {
        hatrunk_core::trunk::parse_trunk(&format!(
            "id = \"{id}\"\nnumbers = [\"{number}\"]\nmax_concurrent_calls = {limit}\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\n"
        ))
        .expect("trunk")
    }

    fn req(client: u64, serial: u64, command: Command) -> Request {
        Request { client, serial, command }
    }

    #[test]
    fn trunks_numbers_and_pool() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(&req(1, 1, Command::PutTrunk(Box::new(trunk("a", "100", 1))))), CommandResult::Ok);
        assert!(
            matches!(s.apply(&req(1, 2, Command::PutTrunk(Box::new(trunk("b", "100", 1))))), CommandResult::Refused(m) if m.contains("100"))
        );
        let admit = |slot: &str| Command::Admit { trunk: "a".into(), slot: slot.into() };
        assert_eq!(s.apply(&req(2, 1, admit("n1/x"))), CommandResult::Admission(Decision::Granted));
        assert_eq!(s.apply(&req(2, 2, admit("n2/y"))), CommandResult::Admission(Decision::Full { used: 1, limit: 1 }));
        assert_eq!(s.apply(&req(2, 3, Command::ReleaseNode { node: "n1".into() })), CommandResult::Ok);
        assert_eq!(s.apply(&req(2, 4, admit("n2/y"))), CommandResult::Admission(Decision::Granted));
    }

    #[test]
    fn commands_round_trip_through_the_log_encoding() {
        let t = hatrunk_core::trunk::parse_trunk(
            "id = \"x\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 3\nmode = \"auto-failover\"\nfailover_policy = \"custom\"\nfailover_codes = [503]\n\
             [primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.0/8\"]\ncaller_id = \"+100\"\nprobe_interval_ms = 1000\n\
             [secondary]\nauth = \"digest\"\nusername = \"u\"\npassword = \"password1\"\n",
        )
        .expect("trunk");
        for cmd in
            [Command::PutTrunk(Box::new(t)), Command::Admit { trunk: "x".into(), slot: "n/1".into() }, Command::DeleteTrunk("x".into())]
        {
            let r = req(1, 1, cmd);
            let back: Request = crate::codec::decode(&crate::codec::encode(&r).expect("encode")).expect("decode");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn concurrent_writes_of_one_client_may_commit_out_of_order() {
        let mut s = ClusterState::default();
        s.apply(&req(1, 1, Command::PutTrunk(Box::new(trunk("a", "100", 5)))));
        let admit = |slot: &str| Command::Admit { trunk: "a".into(), slot: slot.into() };
        // serial 3 commits before serial 2: both are new requests and both take a slot
        assert_eq!(s.apply(&req(9, 3, admit("n/3"))), CommandResult::Admission(Decision::Granted));
        assert_eq!(s.apply(&req(9, 2, admit("n/2"))), CommandResult::Admission(Decision::Granted));
        assert_eq!(s.pool.used("a"), 2);
    }

    #[test]
    fn retries_apply_once() {
        let mut s = ClusterState::default();
        s.apply(&req(1, 1, Command::PutTrunk(Box::new(trunk("a", "100", 1)))));
        let first = s.apply(&req(7, 5, Command::Admit { trunk: "a".into(), slot: "n/1".into() }));
        s.apply(&req(8, 1, Command::Release { slot: "n/1".into() }));
        // the retried admit (same client, same serial) does not take the slot again
        let again = s.apply(&req(7, 5, Command::Admit { trunk: "a".into(), slot: "n/1".into() }));
        assert_eq!(first, again);
        assert_eq!(s.pool.used("a"), 0);
    }

    #[test]
    fn shares_stay_within_the_limit_with_per_call_slots_and_go_with_their_node() {
        let mut s = ClusterState::default();
        s.apply(&req(0, 0, Command::PutTrunk(Box::new(trunk("a", "6561000001", 5)))));
        s.apply(&req(0, 0, Command::Admit { trunk: "a".into(), slot: "n0/1".into() }));
        let reserve = |node: &str, want| Command::Reserve { trunk: "a".into(), node: node.into(), want };
        assert_eq!(s.apply(&req(0, 0, reserve("n1", 3))), CommandResult::Reserved(3));
        assert_eq!(s.apply(&req(0, 0, reserve("n2", 3))), CommandResult::Reserved(1), "one per-call slot + 3 + 1 = 5");
        assert!(s.shares.starved_by_other("a", "n1"));
        s.apply(&req(0, 0, Command::Shrink { trunk: "a".into(), node: "n1".into(), to: 1 }));
        assert_eq!(s.apply(&req(0, 0, reserve("n2", 2))), CommandResult::Reserved(2));
        assert!(!s.shares.starved_by_other("a", "n1"));
        s.apply(&req(0, 0, Command::ReleaseNode { node: "n2".into() }));
        assert_eq!(s.shares.total("a"), 1);
        assert!(matches!(s.apply(&req(0, 0, reserve("n2", 1))), CommandResult::Reserved(1)));
        s.apply(&req(0, 0, Command::DeleteTrunk("a".into())));
        assert_eq!(s.shares.total("a"), 0);
        assert!(matches!(s.apply(&req(0, 0, reserve("n2", 1))), CommandResult::NotFound(_)));
    }

    #[test]
    fn a_restarted_node_keeps_its_shares_and_learns_them() {
        let mut s = ClusterState::default();
        s.apply(&req(0, 0, Command::PutTrunk(Box::new(trunk("a", "6561000001", 4)))));
        let reserve = |node: &str, want| Command::Reserve { trunk: "a".into(), node: node.into(), want };
        assert_eq!(s.apply(&req(0, 0, reserve("n1", 3))), CommandResult::Reserved(3));
        assert_eq!(s.apply(&req(0, 0, reserve("n2", 3))), CommandResult::Reserved(1));
        assert!(s.shares.starved_by_other("a", "n1"));
        // n2 restarts: what it held stays held (its calls may be up); its starved mark goes
        assert_eq!(s.apply(&req(0, 0, Command::Inherit { node: "n2".into() })), CommandResult::Inherited(vec![("a".into(), 1)]));
        assert_eq!(s.shares.total("a"), 4);
        assert!(!s.shares.starved_by_other("a", "n1"));
        assert_eq!(s.apply(&req(0, 0, Command::Inherit { node: "n9".into() })), CommandResult::Inherited(vec![]));
    }

    #[test]
    fn a_delayed_trunk_write_never_overwrites_a_newer_one() {
        let mut s = ClusterState::default();
        let put = |limit, expect| Command::PutTrunkIf { trunk: Box::new(trunk("a", "100", limit)), expect };
        let CommandResult::Revision(r1) = s.apply(&req(0, 0, put(5, Expect::Absent))) else { panic!("created") };
        assert_eq!(s.apply(&req(0, 0, put(5, Expect::Absent))), CommandResult::Stale { trunk: "a".into(), current: r1 });
        // two writers read r1; the first to commit wins, the delayed one is refused
        let CommandResult::Revision(r2) = s.apply(&req(0, 0, put(7, Expect::At(r1)))) else { panic!("first writer") };
        assert_eq!(s.apply(&req(0, 0, put(3, Expect::At(r1)))), CommandResult::Stale { trunk: "a".into(), current: r2 });
        assert_eq!(s.trunks["a"].max_concurrent_calls, 7);
        assert!(matches!(s.apply(&req(0, 0, put(3, Expect::Any))), CommandResult::Revision(r) if r > r2), "--force");
        assert_eq!(s.trunks["a"].max_concurrent_calls, 3);
    }

    #[test]
    fn a_trunk_with_calls_up_is_deleted_only_by_force_and_its_calls_keep_counting() {
        let mut s = ClusterState::default();
        let put = |limit| Command::PutTrunkIf { trunk: Box::new(trunk("a", "100", limit)), expect: Expect::Any };
        s.apply(&req(0, 0, put(4)));
        let reserve = |node: &str, want| Command::Reserve { trunk: "a".into(), node: node.into(), want };
        assert_eq!(s.apply(&req(0, 0, reserve("n1", 3))), CommandResult::Reserved(3));
        let del = |force| Command::DeleteTrunkIf { id: "a".into(), force };
        assert!(matches!(s.apply(&req(0, 0, del(false))), CommandResult::Refused(m) if m.contains("3 slot(s)") && m.contains("--force")));
        assert!(s.trunks.contains_key("a"));
        assert_eq!(s.apply(&req(0, 0, del(true))), CommandResult::Ok);
        assert_eq!(s.apply(&req(0, 0, del(true))), CommandResult::NotFound("a".into()));
        // re-created under the same id: n1's calls still count against the limit
        s.apply(&req(0, 0, put(4)));
        assert_eq!(s.apply(&req(0, 0, reserve("n2", 4))), CommandResult::Reserved(1));
        // lowered below what is held: nothing more is granted until calls end
        s.apply(&req(0, 0, put(2)));
        assert_eq!(s.apply(&req(0, 0, reserve("n2", 1))), CommandResult::Reserved(0));
        // once every call has ended, a plain delete goes through
        for node in ["n1", "n2"] {
            s.apply(&req(0, 0, Command::Shrink { trunk: "a".into(), node: node.into(), to: 0 }));
        }
        assert_eq!(s.apply(&req(0, 0, del(false))), CommandResult::Ok);
    }

    #[test]
    fn an_earlier_process_of_a_node_is_fenced_and_an_inherited_slot_goes_back_once_per_call() {
        let mut s = ClusterState::default();
        s.apply(&req(0, 0, Command::PutTrunk(Box::new(trunk("a", "100", 10)))));
        let boot = |s: &mut ClusterState| match s.apply(&req(0, 0, Command::Boot { node: "n1".into() })) {
            CommandResult::Booted { epoch, held } => (epoch, held),
            other => panic!("{other:?}"),
        };
        assert_eq!(boot(&mut s), (1, vec![]));
        let reserve = |want, epoch| Command::ReserveAt { trunk: "a".into(), node: "n1".into(), want, epoch };
        assert_eq!(s.apply(&req(0, 0, reserve(3, 1))), CommandResult::Reserved(3));
        assert_eq!(boot(&mut s), (2, vec![("a".into(), 3)]));
        // the first process's delayed writes land after the second booted: refused
        let stale_shrink = Command::ShrinkAt { trunk: "a".into(), node: "n1".into(), to: 0, epoch: 1 };
        assert_eq!(s.apply(&req(0, 0, stale_shrink)), CommandResult::Fenced { node: "n1".into(), epoch: 1, current: 2 });
        assert!(matches!(s.apply(&req(0, 0, reserve(1, 1))), CommandResult::Fenced { .. }));
        assert_eq!(s.shares.share("a", "n1"), 3);
        // a BYE of an earlier call passes, then again after another restart
        let end = |call: &str, epoch| Command::EndInherited { node: "n1".into(), trunk: "a".into(), call: call.into(), epoch };
        assert_eq!(s.apply(&req(0, 0, end("c1", 2))), CommandResult::Ended(true));
        assert_eq!(s.apply(&req(0, 0, end("c1", 2))), CommandResult::Ended(false));
        assert_eq!(boot(&mut s), (3, vec![("a".into(), 2)]));
        assert_eq!(s.apply(&req(0, 0, end("c1", 3))), CommandResult::Ended(false), "retransmitted across the restart");
        assert_eq!(s.shares.share("a", "n1"), 2);
        assert_eq!(s.apply(&req(0, 0, end("c2", 3))), CommandResult::Ended(true));
        assert_eq!(s.shares.share("a", "n1"), 1);
    }

    #[test]
    fn a_lost_node_gives_back_its_unused_reserve_at_once_and_its_calls_slots_at_expiry() {
        let mut s = ClusterState::default();
        s.apply(&req(0, 0, Command::PutTrunk(Box::new(trunk("a", "100", 10)))));
        s.apply(&req(0, 0, Command::Boot { node: "n1".into() }));
        assert_eq!(
            s.apply(&req(0, 0, Command::ReserveAt { trunk: "a".into(), node: "n1".into(), want: 8, epoch: 1 })),
            CommandResult::Reserved(8)
        );
        // n1 holds 8: 3 calls up plus a headroom of 1 reported
        let renew = |keep| Command::Renew { node: "n1".into(), epoch: 1, keep: vec![("a".into(), keep)] };
        assert_eq!(s.apply(&req(0, 0, renew(4))), CommandResult::Renewed { lapsed: false, draining: false, shares: vec![] });
        let seq = s.leases.get("n1").map(|r| r.seq).expect("lease");
        s.apply(&req(0, 0, Command::Lapse { node: "n1".into(), seq }));
        assert_eq!(s.shares.share("a", "n1"), 4, "the unused reserve went back; the calls' slots stay");
        assert_eq!(s.apply(&req(0, 0, Command::Reserve { trunk: "a".into(), node: "n2".into(), want: 10 })), CommandResult::Reserved(6));
        // n1 comes back: it hears its shares were cut
        assert_eq!(s.apply(&req(0, 0, renew(4))), CommandResult::Renewed { lapsed: true, draining: false, shares: vec![("a".into(), 4)] });
        // then is removed: its calls keep their slots until they are certainly over
        s.apply(&req(0, 0, Command::Retire { node: "n1".into() }));
        assert_eq!(s.shares.share("a", "n1"), 4);
        assert_eq!(s.apply(&req(0, 0, renew(4))), CommandResult::Removed("n1".into()));
        let seq = s.leases.get("n1").map(|r| r.seq).expect("lease");
        s.apply(&req(0, 0, Command::Expire { node: "n1".into(), seq: seq - 1 }));
        assert_eq!(s.shares.share("a", "n1"), 4, "decided on an older state: no effect");
        s.apply(&req(0, 0, Command::Expire { node: "n1".into(), seq }));
        assert_eq!(s.shares.share("a", "n1"), 0);
        s.apply(&req(0, 0, Command::Rejoin { node: "n1".into() }));
        assert!(matches!(s.apply(&req(0, 0, renew(0))), CommandResult::Renewed { lapsed: true, .. }));
    }
}

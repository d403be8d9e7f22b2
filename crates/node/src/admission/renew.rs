//! Lease renewals and the lease watch of [`EscrowAdmission`]: what this node reports and how it
//! takes the answer, and, on the leader, the `Lapse` and `Expire` writes the watch says are due.

use std::collections::{BTreeMap, HashMap};

use hatrunk_consensus::lease::{DRIFT_MARGIN_MS, LEASE_MS};
use hatrunk_consensus::{Command, CommandResult};
use hatrunk_core::cps::{rate_key, rate_trunk};
use hatrunk_core::escrow::{batch, reserve_ceiling};
use hatrunk_core::trunk::DEFAULT_MAX_CALL_DURATION_S;

use super::{EscrowAdmission, Resync};

impl EscrowAdmission {
    /// Renew this node's lease, reporting per trunk its calls in progress, the slots kept for
    /// earlier runs' calls, and a headroom (`Escrow::propose`). Called with the ledger lock held.
    pub(super) async fn renew_locked(&self, _ledger: &mut Resync) {
        let sent = self.now_ms().max(1);
        self.lease.sending(sent);
        // a trunk's call slots and, with a rate limit, its tokens; and how many nodes hold a share
        // of it, this one counted whether it holds one yet or not
        let (limits, sharers): (HashMap<String, u32>, HashMap<String, u32>) = self.consensus.local(|s| {
            let rates = s.trunks.iter().filter_map(|(id, t)| Some((rate_key(id), t.max_calls_per_second?)));
            let limits = s.trunks.iter().map(|(id, t)| (id.clone(), t.max_concurrent_calls)).chain(rates).collect();
            let sharers = s.trunks.keys().map(|id| (id.clone(), s.shares.sharers_with(id, &self.node))).collect();
            (limits, sharers)
        });
        let limit = |t: &str| limits.get(t).copied().unwrap_or(0);
        // (a rate pool keeps no reserve: its headroom stays the rate's)
        let ceiling = |t: &str| match rate_trunk(t) {
            Some(_) => u32::MAX,
            None => reserve_ceiling(limit(t), sharers.get(t).copied().unwrap_or(1)),
        };
        let mut keep: BTreeMap<String, u32> =
            self.escrow().propose(sent, super::IDLE_MS, |t| batch(limit(t)), ceiling).into_iter().collect();
        for (t, n) in self.inherited().counts() {
            *keep.entry(t).or_default() += n;
        }
        let cmd = Command::Renew { node: self.node.clone(), epoch: self.epoch(), keep: keep.into_iter().collect() };
        // a renewal that takes longer than the lease it would buy is worth nothing: give up and
        // send a fresh one next round, rather than hold the ledger lock
        let budget = std::time::Duration::from_millis(LEASE_MS - DRIFT_MARGIN_MS);
        match self.consensus.write_within(cmd, budget).await {
            Ok(CommandResult::Renewed { lapsed, draining, shares }) => {
                let mut e = self.escrow();
                e.renewed();
                if lapsed {
                    let shares: HashMap<String, u32> = shares.into_iter().collect();
                    let inherited = self.inherited();
                    for t in e.trunks() {
                        e.cut(&t, shares.get(&t).copied().unwrap_or(0), inherited.count(&t));
                    }
                    tracing::warn!(node = %self.node, "admission lease had lapsed: this node's unused reserve went back to the pool");
                }
                drop(e);
                if self.lease.rejoined() {
                    tracing::info!(node = %self.node, "this node is a member again: it takes calls and may stand for election");
                    self.consensus.raft.runtime_config().elect(true);
                }
                self.lease.granted(sent, draining);
            }
            Ok(CommandResult::Removed(_)) => {
                self.escrow().not_renewed();
                if self.lease.removed() {
                    tracing::error!(node = %self.node, "this node was removed from the cluster: it takes no new calls and stands for no election; add it back with `hatrunk cluster join`");
                    // openraft never tells a removed node; left alone it would campaign forever
                    // with ever higher terms
                    self.consensus.raft.runtime_config().elect(false);
                }
            }
            Ok(other) => {
                self.escrow().not_renewed();
                tracing::warn!(node = %self.node, result = ?other, "lease renewal refused");
            }
            Err(e) => {
                let mut es = self.escrow();
                es.not_renewed();
                // it may have committed, finding the lease lapsed: the ledger's cut is then unheard of
                es.cut_to_cap();
                drop(es);
                tracing::debug!(node = %self.node, error = %e, "lease not renewed");
            }
        }
    }

    /// Renew now because `trunk`'s admissions reached what the last renewal reported, unless a
    /// renewal that made room committed while this one waited for the ledger.
    pub(super) async fn renew_for(&self, trunk: &str) {
        let mut ledger = self.ledger.lock().await;
        let over = self.ledger_view(trunk).over();
        if self.escrow().has_room(trunk, over) {
            return;
        }
        self.renew_locked(&mut ledger).await;
    }

    /// Watch every member's lease; on the leader, write the lapses and expiries that are due.
    pub(super) async fn keep_leases(&self) {
        let now = self.now_ms();
        let members: std::collections::BTreeSet<String> = {
            let m = self.consensus.raft.metrics().borrow().membership_config.clone();
            m.membership().nodes().map(|(_, info)| info.name.clone()).collect()
        };
        let due = self.consensus.local(|s| {
            let hold_ms = |node: &str| {
                let longest = s
                    .shares
                    .trunks_of(node)
                    .iter()
                    .filter(|t| rate_trunk(t).is_none()) // tokens go at the lapse
                    .map(|t| s.trunks.get(t).map_or(DEFAULT_MAX_CALL_DURATION_S, |t| t.max_call_duration_s))
                    .max()
                    .unwrap_or(DEFAULT_MAX_CALL_DURATION_S);
                u64::from(longest) * 1000
            };
            let holds = |node: &str| !s.shares.trunks_of(node).is_empty();
            let member = |node: &str| members.contains(node);
            self.watch.lock().unwrap_or_else(|p| p.into_inner()).due(&s.leases, member, holds, hold_ms, now)
        });
        let due = match self.lease_layer {
            Some(layer) => layer(due),
            None => due,
        };
        if due.is_empty() || !self.consensus.is_leader() {
            return;
        }
        for cmd in due {
            match &cmd {
                Command::Lapse { node, .. } => {
                    tracing::warn!(%node, "admission lease not renewed in time: its unused reserve goes back to the pool")
                }
                Command::Retire { node } => {
                    tracing::info!(%node, "a removed node's lease retired: its calls' slots stay held until they end")
                }
                Command::Expire { node, .. } => {
                    tracing::info!(%node, "the longest call of a lost or removed node is over: its remaining slots go back")
                }
                _ => {}
            }
            if let Err(e) = self.consensus.write_within(cmd, super::BACKGROUND_WRITE).await {
                tracing::debug!(error = %e, "lease watch: write not committed; due again next round");
            }
        }
    }
}

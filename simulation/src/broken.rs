//! Deliberately broken builds, to prove the invariants catch what they claim to: each one plugs a
//! defect into a real node through one of `Wiring`'s layers, and a checker test makes sure the
//! suite fails on it where the real build passes.

use std::net::IpAddr;
use std::sync::Arc;

use hatrunk_consensus::types::Command;
use hatrunk_core::policy::FailoverPolicy;
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;
use hatrunk_core::trunk::{Role, Trunk};
use hatrunk_node::admission::Admission;
use hatrunk_node::runtime::{AdmissionLayer, LeaseLayer, StoreLayer};
use hatrunk_node::store::{BoxFuture, TrunkStore};
use hatrunk_node::NodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Admission grants every call without looking at the pool (property 1 must catch it).
    SkipPoolCheck,
    /// The call path sees every trunk fail over on 486 Busy too (property 4 must catch it).
    FailoverOn486,
    /// Trunk writes ignore the revision they were read at (property 2's lost update must catch it).
    IgnoreRevision,
    /// A call going on past an attempt that may still be answered gets its second slot for free
    /// (property 1 must catch the PBX holding both dialogs).
    FreeSecondSlot,
    /// Leases never lapse: a lost node keeps its whole share until its calls' longest duration
    /// (availability must catch the others refusing calls while slots are free).
    NoLapse,
}

impl Broken {
    pub const ALL: [Broken; 5] =
        [Broken::SkipPoolCheck, Broken::FailoverOn486, Broken::IgnoreRevision, Broken::FreeSecondSlot, Broken::NoLapse];

    pub fn name(self) -> &'static str {
        match self {
            Broken::SkipPoolCheck => "skip-pool-check",
            Broken::FailoverOn486 => "failover-on-486",
            Broken::IgnoreRevision => "ignore-revision",
            Broken::FreeSecondSlot => "free-second-slot",
            Broken::NoLapse => "no-lapse",
        }
    }

    pub fn parse(s: &str) -> Option<Broken> {
        Broken::ALL.into_iter().find(|b| b.name() == s)
    }

    pub fn admission_layer(self) -> Option<AdmissionLayer> {
        match self {
            Broken::SkipPoolCheck => Some(skip_pool_check as AdmissionLayer),
            Broken::FreeSecondSlot => Some(free_second_slot as AdmissionLayer),
            _ => None,
        }
    }

    pub fn store_layer(self) -> Option<StoreLayer> {
        match self {
            Broken::FailoverOn486 => Some(failover_on_486 as StoreLayer),
            Broken::IgnoreRevision => Some(ignore_revision as StoreLayer),
            Broken::SkipPoolCheck | Broken::FreeSecondSlot | Broken::NoLapse => None,
        }
    }

    pub fn lease_layer(self) -> Option<LeaseLayer> {
        (self == Broken::NoLapse).then_some(no_lapse as LeaseLayer)
    }
}

/// Admits every call (or, with `seconds_only`, every second slot: `<slot>~<attempt>`) without
/// looking at the pool.
struct SkipPoolCheck(Arc<dyn Admission>, bool);

impl SkipPoolCheck {
    fn skips(&self, slot: &SlotId) -> bool {
        !self.1 || slot.as_str().contains('~')
    }
}

impl Admission for SkipPoolCheck {
    fn admit_now(&self, trunk: &str, limit: u32, slot: &SlotId) -> Option<Decision> {
        if self.skips(slot) {
            return Some(Decision::Granted);
        }
        self.0.admit_now(trunk, limit, slot)
    }
    fn admit(&self, trunk: String, limit: u32, slot: SlotId) -> BoxFuture<'_, Result<Decision, NodeError>> {
        if self.skips(&slot) {
            return Box::pin(async { Ok(Decision::Granted) });
        }
        self.0.admit(trunk, limit, slot)
    }
    fn release(&self, slot: &SlotId) {
        if !(self.1 && self.skips(slot)) {
            self.0.release(slot)
        }
    }
    fn release_inherited(&self, trunk: &str, call_id: &str) {
        self.0.release_inherited(trunk, call_id)
    }
    fn usage(&self) -> Vec<(String, u32)> {
        self.0.usage()
    }
}

fn skip_pool_check(a: Arc<dyn Admission>) -> Arc<dyn Admission> {
    Arc::new(SkipPoolCheck(a, false))
}

fn free_second_slot(a: Arc<dyn Admission>) -> Arc<dyn Admission> {
    Arc::new(SkipPoolCheck(a, true))
}

/// A store with one defect: every trunk the call path sees fails over on 486 too
/// ([`Broken::FailoverOn486`]), or trunk writes ignore their revision ([`Broken::IgnoreRevision`]).
struct BrokenStore(Arc<dyn TrunkStore>, Broken);

impl BrokenStore {
    fn seen(&self, t: Arc<Trunk>) -> Arc<Trunk> {
        if self.1 == Broken::FailoverOn486 {
            with_486(t)
        } else {
            t
        }
    }
}

fn with_486(t: Arc<Trunk>) -> Arc<Trunk> {
    let mut t = (*t).clone();
    let mut codes = t.failover_policy.codes().to_vec();
    codes.push(486);
    t.failover_policy = FailoverPolicy::Custom(codes);
    Arc::new(t)
}

impl TrunkStore for BrokenStore {
    fn cluster_secret(&self) -> Option<String> {
        self.0.cluster_secret()
    }
    fn applied(&self) -> u64 {
        self.0.applied()
    }
    fn apply(&self, trunk: Trunk, expect: hatrunk_consensus::Expect) -> BoxFuture<'_, Result<u64, NodeError>> {
        let expect = if self.1 == Broken::IgnoreRevision { hatrunk_consensus::Expect::Any } else { expect };
        self.0.apply(trunk, expect)
    }
    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<(), NodeError>> {
        self.0.delete(id, force)
    }
    fn revision(&self, id: &str) -> u64 {
        self.0.revision(id)
    }
    fn get(&self, id: &str) -> Option<Arc<Trunk>> {
        self.0.get(id).map(|t| self.seen(t))
    }
    fn list(&self) -> Vec<Arc<Trunk>> {
        self.0.list().into_iter().map(|t| self.seen(t)).collect()
    }
    fn by_number(&self, number: &str) -> Option<Arc<Trunk>> {
        self.0.by_number(number).map(|t| self.seen(t))
    }
    fn by_source(&self, ip: IpAddr) -> Vec<(Arc<Trunk>, Role)> {
        self.0.by_source(ip).into_iter().map(|(t, r)| (self.seen(t), r)).collect()
    }
    fn by_username(&self, user: &str) -> Option<(Arc<Trunk>, Role)> {
        self.0.by_username(user).map(|(t, r)| (self.seen(t), r))
    }
    fn register(&self, user: String, contact: String, route: String, expires_ms: u64) -> BoxFuture<'_, Result<(), NodeError>> {
        self.0.register(user, contact, route, expires_ms)
    }
    fn registration(&self, user: &str) -> Option<(String, String, u64)> {
        self.0.registration(user)
    }
}

fn failover_on_486(s: Arc<dyn TrunkStore>) -> Arc<dyn TrunkStore> {
    Arc::new(BrokenStore(s, Broken::FailoverOn486))
}

fn ignore_revision(s: Arc<dyn TrunkStore>) -> Arc<dyn TrunkStore> {
    Arc::new(BrokenStore(s, Broken::IgnoreRevision))
}

/// Drops every `Lapse` the lease watch says is due ([`Broken::NoLapse`]).
fn no_lapse(due: Vec<Command>) -> Vec<Command> {
    due.into_iter().filter(|c| !matches!(c, Command::Lapse { .. })).collect()
}

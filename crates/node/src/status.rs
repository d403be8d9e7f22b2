//! Live per-account state shared between the proxy engine (writer) and the admin API and metrics
//! (readers): probe health, registrations, and which probes are scheduled.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use hatrunk_core::health::{HealthState, ProbeHealth};
use hatrunk_core::trunk::Role;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountState {
    pub health: ProbeHealth,
    /// The live registration's contact (Digest accounts).
    pub registered: Option<String>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<(String, Role), AccountState>,
    probes: HashSet<(String, Role)>,
    calls_in_progress: usize,
}

#[derive(Default)]
pub struct SharedStatus {
    inner: Mutex<Inner>,
}

impl SharedStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn probe_health(&self, trunk: &str, role: Role) -> HealthState {
        self.lock().accounts.get(&(trunk.to_string(), role)).map(|a| a.health.state).unwrap_or(HealthState::Unknown)
    }

    pub fn record_probe(&self, trunk: &str, role: Role, ok: bool, now: u64, up: u32, down: u32) -> Option<HealthState> {
        self.lock().accounts.entry((trunk.to_string(), role)).or_default().health.record(ok, now, up, down)
    }

    pub fn set_registration(&self, trunk: &str, role: Role, contact: Option<String>) {
        self.lock().accounts.entry((trunk.to_string(), role)).or_default().registered = contact;
    }

    /// Returns true when the probe was not scheduled yet (and now is).
    pub fn mark_probe_scheduled(&self, trunk: &str, role: Role) -> bool {
        self.lock().probes.insert((trunk.to_string(), role))
    }

    pub fn unschedule_probe(&self, trunk: &str, role: Role) {
        let mut g = self.lock();
        g.probes.remove(&(trunk.to_string(), role));
        g.accounts.remove(&(trunk.to_string(), role));
    }

    pub fn account(&self, trunk: &str, role: Role) -> AccountState {
        self.lock().accounts.get(&(trunk.to_string(), role)).cloned().unwrap_or_default()
    }

    pub fn set_calls_in_progress(&self, n: usize) {
        self.lock().calls_in_progress = n;
    }

    pub fn calls_in_progress(&self) -> usize {
        self.lock().calls_in_progress
    }
}

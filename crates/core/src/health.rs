//! Account health from OPTIONS probes: Up after `up_after` answers in a row, Down after `down_after`
//! failures in a row (Kamailio dispatcher and OpenSIPS style thresholds). Any SIP response to a probe
//! counts as an answer: a PBX that says 404 or 501 to OPTIONS is alive.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Not probed (no `probe_interval_ms`), or not enough probes yet.
    Unknown,
    Up,
    Down,
}

/// Probe history of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeHealth {
    pub state: HealthState,
    ok_run: u32,
    fail_run: u32,
    /// When the state last changed (ms on the caller's clock).
    pub since_ms: u64,
}

impl Default for ProbeHealth {
    fn default() -> Self {
        ProbeHealth { state: HealthState::Unknown, ok_run: 0, fail_run: 0, since_ms: 0 }
    }
}

impl ProbeHealth {
    /// Record one probe result; returns the new state when it changed.
    pub fn record(&mut self, answered: bool, now_ms: u64, up_after: u32, down_after: u32) -> Option<HealthState> {
        if answered {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
        }
        let next = if self.ok_run >= up_after.max(1) {
            HealthState::Up
        } else if self.fail_run >= down_after.max(1) {
            HealthState::Down
        } else {
            self.state
        };
        (next != self.state).then(|| {
            self.state = next;
            self.since_ms = now_ms;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let mut h = ProbeHealth::default();
        assert_eq!(h.record(true, 1, 2, 3), None);
        assert_eq!(h.record(true, 2, 2, 3), Some(HealthState::Up));
        assert_eq!(h.record(false, 3, 2, 3), None);
        assert_eq!(h.record(false, 4, 2, 3), None);
        assert_eq!(h.record(true, 5, 2, 3), None, "a success breaks the failure run");
        for t in 6..8 {
            assert_eq!(h.record(false, t, 2, 3), None);
        }
        assert_eq!(h.record(false, 9, 2, 3), Some(HealthState::Down));
        assert_eq!(h.since_ms, 9);
    }
}

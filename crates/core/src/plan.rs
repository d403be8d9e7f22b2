//! The attempt chain of one inbound call: which account gets the next attempt, under the trunk's mode.
//!
//! ```text
//!   start ──► Try(first) ──outcome──► policy triggers && untried Secondary? ──yes──► Try(Secondary)
//!                                            │no                                        │outcome
//!                                            ▼                                          ▼
//!                                          Done ◄──────────────────────────────────── Done
//! ```
//! Only Auto Fail-over ever makes a second attempt. Under Auto Fail-over, a Primary whose health is
//! known Down is skipped straight to the Secondary ("check the status of the Primary before failing
//! over", seed 000), unless the Secondary is known Down too.

use serde::{Deserialize, Serialize};

use crate::health::HealthState;
use crate::policy::{FailoverPolicy, Outcome};
use crate::rr::RoundRobin;
use crate::trunk::{Mode, Role};

/// What the call path does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send an attempt to this account.
    Try(Role),
    /// No more attempts: the last outcome is the call's result.
    Done,
}

/// The attempt chain of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPlan {
    mode: Mode,
    policy: FailoverPolicy,
    tried: Vec<Role>,
    /// The Primary was skipped because its health was Down.
    pub skipped_primary: bool,
    /// The caller cancelled: no further attempt may start.
    pub cancelled: bool,
}

impl CallPlan {
    /// Begin a call. `rr` is the trunk's Load Balancing cursor; `health` gives each account's state.
    pub fn start(mode: Mode, policy: FailoverPolicy, rr: &mut RoundRobin, health: impl Fn(Role) -> HealthState) -> (CallPlan, Step) {
        let (first, skipped_primary) = match mode {
            Mode::OnlyPrimary => (Role::Primary, false),
            Mode::LoadBalancing => ([Role::Primary, Role::Secondary][rr.pick(2)], false),
            Mode::AutoFailover => {
                if health(Role::Primary) == HealthState::Down && health(Role::Secondary) != HealthState::Down {
                    (Role::Secondary, true)
                } else {
                    (Role::Primary, false)
                }
            }
        };
        let plan = CallPlan { mode, policy, tried: vec![first], skipped_primary, cancelled: false };
        (plan, Step::Try(first))
    }

    /// The attempt in progress ended with `outcome`: decide the next step.
    pub fn on_outcome(&mut self, outcome: Outcome) -> Step {
        if self.cancelled || outcome == Outcome::Cancelled {
            self.cancelled = true;
            return Step::Done;
        }
        if self.mode != Mode::AutoFailover || !self.policy.triggers(outcome) {
            return Step::Done;
        }
        if self.tried.contains(&Role::Secondary) {
            return Step::Done;
        }
        self.tried.push(Role::Secondary);
        Step::Try(Role::Secondary)
    }

    /// The caller sent CANCEL: the chain stops after the attempt in progress.
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Whether the call went to the Secondary after an attempt to the Primary failed.
    pub fn failed_over(&self) -> bool {
        self.tried.len() > 1
    }

    pub fn attempts(&self) -> &[Role] {
        &self.tried
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CURRENT_CODES;

    fn up(_: Role) -> HealthState {
        HealthState::Unknown
    }

    #[test]
    fn only_primary_never_retries() {
        let mut rr = RoundRobin::default();
        for code in 300..=699 {
            let (mut p, s) = CallPlan::start(Mode::OnlyPrimary, FailoverPolicy::Current, &mut rr, up);
            assert_eq!(s, Step::Try(Role::Primary));
            assert_eq!(p.on_outcome(Outcome::Final(code)), Step::Done);
        }
    }

    #[test]
    fn load_balancing_alternates_and_never_retries() {
        let mut rr = RoundRobin::default();
        let mut firsts = vec![];
        for _ in 0..4 {
            let (mut p, s) = CallPlan::start(Mode::LoadBalancing, FailoverPolicy::Current, &mut rr, up);
            firsts.push(s);
            assert_eq!(p.on_outcome(Outcome::Final(503)), Step::Done);
            assert_eq!(p.on_outcome(Outcome::ConnectionError), Step::Done);
        }
        let (p, s) = (Step::Try(Role::Primary), Step::Try(Role::Secondary));
        assert_eq!(firsts, vec![p, s, p, s]);
    }

    #[test]
    fn auto_failover_every_code_under_each_policy() {
        for policy in [FailoverPolicy::Current, FailoverPolicy::Legacy, FailoverPolicy::Custom(vec![486])] {
            for code in 300..=699 {
                let (mut p, _) = CallPlan::start(Mode::AutoFailover, policy.clone(), &mut RoundRobin::default(), up);
                let expect = if policy.triggers(Outcome::Final(code)) { Step::Try(Role::Secondary) } else { Step::Done };
                assert_eq!(p.on_outcome(Outcome::Final(code)), expect, "{policy:?} {code}");
                // the Secondary's failure ends the chain whatever it is
                assert_eq!(p.on_outcome(Outcome::Final(code)), Step::Done);
            }
        }
        assert_eq!(CURRENT_CODES.len(), 10);
    }

    #[test]
    fn cancel_stops_the_chain() {
        let (mut p, _) = CallPlan::start(Mode::AutoFailover, FailoverPolicy::Current, &mut RoundRobin::default(), up);
        p.cancel();
        assert_eq!(p.on_outcome(Outcome::Final(503)), Step::Done);
        assert!(!p.failed_over());
    }

    #[test]
    fn primary_known_down_is_skipped() {
        let health = |r: Role| {
            if r == Role::Primary {
                HealthState::Down
            } else {
                HealthState::Up
            }
        };
        let (mut p, s) = CallPlan::start(Mode::AutoFailover, FailoverPolicy::Current, &mut RoundRobin::default(), health);
        assert_eq!(s, Step::Try(Role::Secondary));
        assert!(p.skipped_primary);
        assert_eq!(p.on_outcome(Outcome::Final(503)), Step::Done);
        // both down: try the Primary anyway (the health view may be stale)
        let (_, s) = CallPlan::start(Mode::AutoFailover, FailoverPolicy::Current, &mut RoundRobin::default(), |_| HealthState::Down);
        assert_eq!(s, Step::Try(Role::Primary));
        // Load Balancing ignores health
        let (_, s) = CallPlan::start(Mode::LoadBalancing, FailoverPolicy::Current, &mut RoundRobin::default(), health);
        assert_eq!(s, Step::Try(Role::Primary));
    }
}

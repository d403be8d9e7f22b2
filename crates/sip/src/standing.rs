//! Telling a node that is behind from one that stalled once: CoDel's test for a standing queue
//! (RFC 8289 section 3.2). A new request that waited longer than the target is refused only once
//! every one taken off the queue for [`INTERVAL_MS`] waited that long; from then on each late one is
//! refused until none was late for [`INTERVAL_MS`]. A gap of more than [`INTERVAL_MS`] between new
//! requests starts afresh, as CoDel does when its queue empties: requests that far apart make no
//! queue, and two stalls minutes apart are not one standing queue.
//!
//! Why: refusing every late request at once refused calls after a single stall. A VM descheduled
//! for 54 ms (nine debug nodes and SIPp on two cores) found its next INVITEs 54 ms old and answered
//! them 503 (`shed_wait_ms` is 50), although the queue behind them drained in a few milliseconds.
//! Under sustained overload the queue stands: requests stay late, and after the first interval the
//! rule sheds exactly as before (docs/decisions.md has the goodput figures).

/// How long requests must keep arriving late before the node counts as behind, and how long none
/// may be late before it no longer does: CoDel's interval.
pub const INTERVAL_MS: u64 = 100;

/// What one queue's recent waits say. Pure: the caller gives the clock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Since when every request taken off the queue waited longer than the target.
    late_since: Option<u64>,
    /// Since when none did, while shedding.
    on_time_since: Option<u64>,
    shedding: bool,
    /// When the last request was taken off the queue.
    last: Option<u64>,
}

impl Standing {
    /// A request that waited `waited_ms` is taken off the queue at `now_ms`: true when it must be
    /// refused (it is late, and the queue has stood late for [`INTERVAL_MS`]).
    pub fn late(&mut self, waited_ms: u64, target_ms: u64, now_ms: u64) -> bool {
        if self.last.is_some_and(|last| now_ms.saturating_sub(last) > INTERVAL_MS) {
            *self = Standing::default();
        }
        self.last = Some(now_ms);
        if waited_ms <= target_ms {
            self.late_since = None;
            if self.shedding {
                let since = *self.on_time_since.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= INTERVAL_MS {
                    self.shedding = false;
                    self.on_time_since = None;
                }
            }
            return false;
        }
        self.on_time_since = None;
        if !self.shedding {
            let since = *self.late_since.get_or_insert(now_ms);
            self.shedding = now_ms.saturating_sub(since) >= INTERVAL_MS;
        }
        self.shedding
    }

    /// Whether late requests are being refused now.
    pub fn shedding(&self) -> bool {
        self.shedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stall_refuses_nothing() {
        let mut s = Standing::default();
        // a 54 ms stall: the queue behind it drains in a few ms, each request less late
        for (i, waited) in [54, 53, 51, 49, 20, 1].into_iter().enumerate() {
            assert!(!s.late(waited, 50, 1000 + i as u64), "waited {waited}");
        }
        assert!(!s.shedding());
    }

    #[test]
    fn a_standing_queue_sheds_every_late_request_until_it_drains() {
        let mut s = Standing::default();
        // requests stay late for an interval: the first ones are still taken
        for t in 0..INTERVAL_MS {
            assert!(!s.late(60 + t, 50, t), "late for {t} ms only");
        }
        assert!(s.late(160, 50, INTERVAL_MS), "late for an interval: refused");
        // shedding keeps the queue near the target: those on time are taken, the late refused
        assert!(!s.late(40, 50, 101));
        assert!(s.late(55, 50, 102), "late again while shedding: refused at once");
        for t in 103..203 {
            assert!(!s.late(10, 50, t));
        }
        assert!(s.shedding(), "on time for 99 ms only");
        assert!(!s.late(10, 50, 203));
        assert!(!s.shedding(), "on time for an interval: caught up");
        assert!(!s.late(70, 50, 204), "late once more: a stall, not a standing queue");
    }

    #[test]
    fn a_gap_between_requests_starts_afresh() {
        let mut s = Standing::default();
        assert!(!s.late(80, 50, 0));
        assert!(!s.late(80, 50, 500), "two stalls half a second apart are not a standing queue");
        for t in (510..600).step_by(10) {
            assert!(!s.late(80, 50, t));
        }
        assert!(s.late(80, 50, 600), "late requests 10 ms apart for an interval: a standing queue");
        assert!(!s.late(80, 50, 701), "no new request for over an interval: the overload is over");
        assert!(!s.shedding());
    }
}

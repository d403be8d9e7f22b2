//! Episodes worth one log line each way: a burst of events (shedding, a failover storm) starts one
//! when `threshold` of them fall within `window_ms`, and it ends after `window_ms` without any. An
//! operator reads "started" and "stopped" with a count, not a line per event. Pure: the caller
//! passes the clock.

#[derive(Debug, Clone)]
pub struct Episode {
    window_ms: u64,
    threshold: u32,
    window_start: u64,
    in_window: u32,
    last: u64,
    on: bool,
    total: u64,
}

impl Episode {
    pub fn new(window_ms: u64, threshold: u32) -> Episode {
        Episode { window_ms, threshold: threshold.max(1), window_start: 0, in_window: 0, last: 0, on: false, total: 0 }
    }

    /// One event at `now`; true when it starts an episode.
    pub fn event(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.window_start) >= self.window_ms {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.last = now;
        if self.on {
            self.total += 1;
            return false;
        }
        if self.in_window >= self.threshold {
            self.on = true;
            self.total = u64::from(self.in_window);
            return true;
        }
        false
    }

    /// The episode's event count when it ended by `now` (a whole window without events).
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        (self.on && now.saturating_sub(self.last) >= self.window_ms).then(|| {
            self.on = false;
            std::mem::take(&mut self.total)
        })
    }

    /// Nothing in progress and nothing counted: the tracker may be dropped.
    pub fn idle(&self, now: u64) -> bool {
        !self.on && now.saturating_sub(self.last) >= self.window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_starts_once_and_a_quiet_window_ends_it_with_its_count() {
        let mut e = Episode::new(10_000, 3);
        assert!(!e.event(0) && !e.event(1_000));
        assert!(e.event(2_000), "the third within the window starts it");
        assert!(!e.event(3_000), "said once");
        assert_eq!(e.tick(12_000), None, "not a whole window since the last");
        assert_eq!(e.tick(13_000), Some(4));
        assert_eq!(e.tick(14_000), None, "ended once");
        assert!(e.idle(14_000));
    }

    #[test]
    fn events_spread_wider_than_the_window_start_nothing() {
        let mut e = Episode::new(1_000, 2);
        assert!(!e.event(0) && !e.event(1_500) && !e.event(3_000));
        assert_eq!(e.tick(10_000), None);
    }
}

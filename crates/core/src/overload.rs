//! Admission of new requests under overload, decided from `(state, backlog, now)` only.
//!
//! Refusing on queue length alone (refuse everything while the queue is long, take everything
//! once it is short) swings: a burst of taken calls brings its answers, ACKs and BYEs a moment
//! later, which cannot be refused, the queue grows again and everything new is refused, and so
//! on. What the node completes under that swing was between a third and four fifths of what it
//! sustains. So new requests go through a token bucket whose rate follows what the node keeps up
//! with: each window, if the mean queue was above the target the rate drops to a fraction of what
//! was taken in that window; if it was below half the target the rate grows a little; and when
//! the limit has not been reached for a while it is lifted. Past the hard ceiling everything new
//! is refused regardless. The excess is refused at once (503 with Retry-After, by the caller of
//! this module), which costs far less than a call, so the node keeps completing near its
//! sustained rate however much is offered.

/// How the throttle reacts (docs/security.md says why these values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// Length of one measuring window.
    pub window_ms: u64,
    /// The mean queue (messages waiting for the engine) the node aims at under overload.
    pub target_backlog: usize,
    /// Past this many waiting messages every new request is refused.
    pub hard_backlog: usize,
    /// After a window over target, the rate becomes this fraction of what was taken in it.
    pub decrease: f64,
    /// After a window under half the target, the rate grows by this fraction, plus `min_rate`.
    pub increase: f64,
    /// The rate never goes below this (new requests per second), so the node never refuses all.
    pub min_rate: f64,
    /// Windows in a row in which fewer than 90% of the allowed requests came before the limit
    /// is lifted.
    pub lift_after: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            window_ms: 50,
            target_backlog: 250,
            hard_backlog: 2_000,
            decrease: 0.9,
            increase: 0.03,
            min_rate: 20.0,
            lift_after: 20,
        }
    }
}

/// The throttle's state: open (no limit) or limiting new requests to `rate` per second.
#[derive(Debug, Clone)]
pub struct Throttle {
    cfg: ThrottleConfig,
    rate: Option<f64>,
    tokens: f64,
    refilled_at: u64,
    window_start: u64,
    backlog_sum: u64,
    samples: u64,
    taken: u64,
    offered: u64,
    slack_windows: u32,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Throttle {
            cfg,
            rate: None,
            tokens: 0.0,
            refilled_at: 0,
            window_start: 0,
            backlog_sum: 0,
            samples: 0,
            taken: 0,
            offered: 0,
            slack_windows: 0,
        }
    }

    /// The current limit on new requests per second; None when there is none.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Note the queue as one message is taken from it; closes the window when it is over.
    pub fn observe(&mut self, backlog: usize, now: u64) {
        if now < self.window_start {
            self.window_start = now; // a clock that stepped back starts a new window
        }
        let elapsed = now - self.window_start;
        if elapsed >= self.cfg.window_ms {
            self.close_window(elapsed);
            self.window_start = now;
        }
        self.backlog_sum = self.backlog_sum.saturating_add(backlog as u64);
        self.samples += 1;
    }

    /// May a new (out-of-dialog) request be taken now, with `backlog` messages behind it?
    pub fn admit(&mut self, backlog: usize, now: u64) -> bool {
        self.offered += 1;
        if backlog > self.cfg.hard_backlog {
            return false;
        }
        let Some(rate) = self.rate else {
            self.taken += 1;
            return true;
        };
        let dt = now.saturating_sub(self.refilled_at);
        self.refilled_at = now;
        // a window's worth of burst: the bucket smooths, it does not store up a surge
        let burst = (rate * self.cfg.window_ms as f64 / 1000.0).max(1.0);
        self.tokens = (self.tokens + rate * dt as f64 / 1000.0).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.taken += 1;
            true
        } else {
            false
        }
    }

    fn close_window(&mut self, elapsed_ms: u64) {
        let mean = if self.samples == 0 { 0.0 } else { self.backlog_sum as f64 / self.samples as f64 };
        let per_s = |n: u64| n as f64 * 1000.0 / elapsed_ms as f64;
        let (taken, offered) = (per_s(self.taken), per_s(self.offered));
        let target = self.cfg.target_backlog as f64;
        if mean > target {
            let from = self.rate.map_or(taken, |r| r.min(taken));
            self.rate = Some((from * self.cfg.decrease).max(self.cfg.min_rate));
            self.slack_windows = 0;
        } else if let Some(r) = self.rate {
            if offered < r * 0.9 {
                self.slack_windows += 1;
                if self.slack_windows >= self.cfg.lift_after {
                    self.rate = None;
                }
            } else {
                self.slack_windows = 0;
            }
            if mean < target / 2.0 && self.rate.is_some() {
                self.rate = Some(r * (1.0 + self.cfg.increase) + self.cfg.min_rate);
            }
        }
        self.backlog_sum = 0;
        self.samples = 0;
        self.taken = 0;
        self.offered = 0;
    }
}

#[cfg(test)]
#[path = "overload_tests.rs"]
mod tests;

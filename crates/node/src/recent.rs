//! What the status page shows of the recent past: the node's last CDRs (failovers among them) and
//! calls and failovers per second over the last minutes, sampled from the CDRs as they are written.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hatrunk_core::cdr::Cdr;
use serde::Serialize;

/// CDRs kept for the page.
const CDRS: usize = 50;
/// Rate samples kept: one per [`SAMPLE_MS`], five minutes.
const SAMPLES: usize = 60;
pub const SAMPLE_MS: u64 = 5_000;

/// One interval's rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Unix ms at the end of the interval.
    pub at_ms: u64,
    pub calls_per_s: f64,
    pub failovers_per_s: f64,
}

#[derive(Default)]
struct Inner {
    cdrs: VecDeque<Arc<Cdr>>,
    failovers: VecDeque<Arc<Cdr>>,
    calls_total: u64,
    failovers_total: u64,
    last_sample: Option<(u64, u64, u64)>,
    rates: VecDeque<Rate>,
}

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A CDR was written. It is kept as it is and put into JSON only when the page asks: the writer
    /// sees every call, the page a few of them.
    pub fn saw(&self, c: Arc<Cdr>) {
        let mut g = self.lock();
        g.calls_total += 1;
        if c.failover {
            g.failovers_total += 1;
            g.failovers.push_front(c.clone());
            g.failovers.truncate(CDRS);
        }
        g.cdrs.push_front(c);
        g.cdrs.truncate(CDRS);
    }

    /// Close an interval at `now_ms` (Unix): its rates from the counts since the last one.
    pub fn sample(&self, now_ms: u64) {
        let mut g = self.lock();
        let (calls, failovers) = (g.calls_total, g.failovers_total);
        if let Some((t, c, f)) = g.last_sample {
            let secs = now_ms.saturating_sub(t).max(1) as f64 / 1000.0;
            let r = Rate { at_ms: now_ms, calls_per_s: (calls - c) as f64 / secs, failovers_per_s: (failovers - f) as f64 / secs };
            g.rates.push_back(r);
            while g.rates.len() > SAMPLES {
                g.rates.pop_front();
            }
        }
        g.last_sample = Some((now_ms, calls, failovers));
    }

    /// The last CDRs, newest first.
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        json(&self.lock().cdrs)
    }

    /// The last failed-over calls' CDRs, newest first.
    pub fn failovers(&self) -> Vec<serde_json::Value> {
        json(&self.lock().failovers)
    }

    pub fn rates(&self) -> Vec<Rate> {
        self.lock().rates.iter().copied().collect()
    }
}

fn json(cdrs: &VecDeque<Arc<Cdr>>) -> Vec<serde_json::Value> {
    cdrs.iter().map(|c| serde_json::to_value(&**c).unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(failover: bool) -> Cdr {
        let json = serde_json::json!({
            "call_id": "c", "trunk": "t", "direction": "inbound", "from": "f", "to": "t", "start_ms": 1, "end_ms": 2,
            "disposition": "ANSWERED", "cause": "NORMAL_CLEARING", "failover": failover, "primary_skipped": false, "attempts": []
        });
        serde_json::from_value(json).expect("cdr")
    }

    #[test]
    fn rates_are_counts_per_second_between_samples_and_history_is_bounded() {
        let r = Recent::default();
        r.sample(0);
        for i in 0..20 {
            r.saw(Arc::new(cdr(i % 4 == 0)));
        }
        r.sample(5_000);
        assert_eq!(r.rates(), vec![Rate { at_ms: 5_000, calls_per_s: 4.0, failovers_per_s: 1.0 }]);
        for i in 0..100 {
            r.saw(Arc::new(cdr(false)));
            r.sample(10_000 + i * 5_000);
        }
        assert_eq!(r.cdrs().len(), CDRS);
        assert_eq!(r.failovers().len(), 5);
        assert_eq!(r.rates().len(), SAMPLES);
    }
}

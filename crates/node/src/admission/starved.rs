//! Waiting out a full ledger: how calls that find no room on this node wait for the other nodes
//! to give back their spare, with one ledger write between them rather than one each.
//!
//! At a binding limit every call refused here used to ask the ledger itself, five more times while
//! it waited for the others: six Raft writes per refusal through the node's one ledger lock, and
//! refusals queued behind each other until the 4 s admission wait ran out (issue 20's scale-out
//! benchmark, refusal p99 4,008 ms). Now the first call the ledger turns down opens a *window* for
//! its trunk. Its call and every call of that trunk that finds no room here while the window is
//! open wait for a change (a share given back anywhere, a call ended here) and are refused when it
//! closes. The ledger's starved mark tells the others to give back their spare at once (they wake
//! on the same change); the window lasts a few ledger round trips, so a slot another node frees is
//! here before the window closes. A call after the window asks again, with a write only when the
//! ledger shows something free or nobody knows this node is starved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The shortest and longest window: a few ledger round trips on a LAN fit in the first, a WAN's
/// in the second (the old fixed wait was 300 ms).
const WINDOW_MS: (u64, u64) = (30, 400);
/// Round trips in a window: this node's mark reaches the others, one gives back, this node asks.
const ROUND_TRIPS: u64 = 3;

#[derive(Default)]
pub(super) struct Starved {
    /// Per trunk: until when calls wait instead of asking.
    windows: Mutex<HashMap<String, u64>>,
    /// Recent ledger write latency in microseconds (a moving average).
    write_us: AtomicU64,
}

impl Starved {
    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when `trunk`'s window is open, if it is at `now_ms`.
    pub(super) fn open_until(&self, trunk: &str, now_ms: u64) -> Option<u64> {
        self.windows().get(trunk).copied().filter(|until| *until > now_ms)
    }

    /// Open `trunk`'s window (or keep the one open): until when its calls wait.
    pub(super) fn open(&self, trunk: &str, now_ms: u64) -> u64 {
        let len = self.window_ms();
        let mut w = self.windows();
        let until = w.entry(trunk.to_string()).or_insert(0);
        if *until <= now_ms {
            *until = now_ms + len;
        }
        *until
    }

    /// The ledger granted less than asked of `trunk` at `now_ms` (it marked this node starved).
    pub(super) fn note_short(&self, trunk: &str, now_ms: u64) {
        let mut w = self.windows();
        let until = w.entry(trunk.to_string()).or_insert(0);
        *until = (*until).max(now_ms);
    }

    /// Nothing of `trunk` was refused here in the last `quiet_ms`: its starved mark may go.
    pub(super) fn quiet(&self, trunk: &str, now_ms: u64, quiet_ms: u64) -> bool {
        self.windows().get(trunk).is_none_or(|until| until + quiet_ms <= now_ms)
    }

    /// A ledger write took `us` microseconds.
    pub(super) fn note_write(&self, us: u64) {
        let old = self.write_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.write_us.store(new, Ordering::Relaxed);
    }

    /// How long a window stays open.
    pub(super) fn window_ms(&self) -> u64 {
        let trip = self.write_us.load(Ordering::Relaxed).div_ceil(1000);
        (trip * ROUND_TRIPS).clamp(WINDOW_MS.0, WINDOW_MS.1)
    }
}

impl super::EscrowAdmission {
    /// Wait until a call of `trunk` could find room (a slot free here, or something free in the
    /// ledger) or `until`; true for the first.
    pub(super) async fn wait_for_room(&self, trunk: &str, until: u64) -> bool {
        let applied = self.consensus.applied();
        loop {
            // listen before looking, so a change between the two is not missed
            let ledger = applied.notified();
            let here = self.changed.notified();
            tokio::pin!(ledger, here);
            ledger.as_mut().enable();
            here.as_mut().enable();
            let v = self.ledger_view(trunk);
            if v.free() > 0 || self.escrow().has_room(trunk, v.over()) {
                return true;
            }
            let now = self.now_ms();
            if now >= until {
                return false;
            }
            tokio::select! {
                _ = &mut ledger => {}
                _ = &mut here => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(until - now)) => return false,
            }
        }
    }

    /// Another node waits for a trunk this node has spare of: give it back now, not at the next
    /// round.
    pub fn owes_starved(&self) -> bool {
        let trunks = self.escrow().trunks();
        trunks.iter().any(|t| {
            let spare = {
                let e = self.escrow();
                e.usable(t) > e.in_use(t)
            };
            spare && self.consensus.local(|s| s.shares.starved_by_other(t, &self.node))
        })
    }

    /// Wait for a change that may matter to the others: this node's calls or the ledger.
    pub async fn changed(&self) {
        let applied = self.consensus.applied();
        tokio::select! {
            _ = applied.notified() => {}
            _ = self.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_stays_as_opened_until_it_closes_then_a_new_one_opens() {
        let s = Starved::default();
        assert_eq!(s.open_until("t", 0), None);
        assert_eq!(s.open("t", 100), 130);
        assert_eq!(s.open("t", 120), 130, "the calls of one window close with it");
        assert_eq!(s.open_until("t", 129), Some(130));
        assert_eq!(s.open_until("t", 130), None);
        assert_eq!(s.open("t", 131), 161);
        assert_eq!(s.open_until("u", 131), None, "per trunk");
    }

    #[test]
    fn the_window_is_a_few_ledger_round_trips_within_bounds() {
        let s = Starved::default();
        assert_eq!(s.window_ms(), 30, "no write seen yet: the LAN floor");
        s.note_write(40_000);
        assert_eq!(s.window_ms(), 120);
        for _ in 0..64 {
            s.note_write(500_000);
        }
        assert_eq!(s.window_ms(), 400, "a slow ledger does not hold calls longer than the ceiling");
    }

    #[test]
    fn a_trunk_is_quiet_a_while_after_its_last_window() {
        let s = Starved::default();
        assert!(s.quiet("t", 0, 1000), "never starved");
        s.open("t", 100);
        assert!(!s.quiet("t", 1000, 1000));
        assert!(s.quiet("t", 1130, 1000));
        s.note_short("t", 2000);
        assert_eq!(s.open_until("t", 2000), None, "a short grant opens no window");
        assert!(!s.quiet("t", 2999, 1000));
        assert!(s.quiet("t", 3000, 1000));
    }
}

//! Waiting out a full ledger: how calls that find no room on this node wait for the other nodes
//! to give back their spare, with one ledger write between them rather than one each.
//!
//! At a binding limit every call refused here used to ask the ledger itself, five more times while
//! it waited for the others: six Raft writes per refusal through the node's one ledger lock, and
//! refusals queued behind each other until the 4 s admission wait ran out (issue 20's scale-out
//! benchmark, refusal p99 4,008 ms).
//!
//! Now the ledger's first "less than you asked" starts an *episode* for the trunk here, and with it
//! a *window* a few ledger round trips long. The ledger's starved mark tells the others to give
//! back their spare at once (they wake on the same change). Calls that find no room while the
//! window is open wait for a change (a share given back anywhere, a call ended here) and are
//! refused when it closes: by then what the others held spare has come back. After it, while the
//! episode lasts, the others give back each slot as soon as it is spare, so a call that finds no
//! room here and nothing free in the ledger is refused at once, without a write. The episode ends
//! a second after the last shortage; the starved mark then goes, and the others keep a reserve
//! again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The shortest and longest window: a few ledger round trips on a LAN fit in the first, a WAN's
/// in the second (the old fixed wait was 300 ms).
const WINDOW_MS: (u64, u64) = (30, 400);
/// Round trips in a window: this node's mark reaches the others, one gives back, this node asks.
const ROUND_TRIPS: u64 = 3;
/// A trunk refused nothing here for this long: the episode is over (and its starved mark may go).
pub(super) const QUIET_MS: u64 = 1000;

/// One stretch of this node being short of a trunk, from the first answer of the ledger that was
/// less than asked to [`QUIET_MS`] after the last.
#[derive(Clone, Copy, Default)]
struct Episode {
    /// The end of the first window: until then calls that find no room wait; after it the others
    /// have given back what they had spare, and keep doing so as soon as they have any, so a call
    /// that finds no room is refused at once.
    until: u64,
    last: u64,
    /// When this node last asked the ledger to clear its starved mark.
    cleared: u64,
}

/// Per trunk, this node's episodes of being short, and how long the ledger takes to answer.
#[derive(Default)]
pub(super) struct Starved {
    episodes: Mutex<HashMap<String, Episode>>,
    /// Recent ledger write latency in microseconds (a moving average).
    write_us: AtomicU64,
    /// When the last one was answered (the admission's clock, ms).
    written_ms: AtomicU64,
    /// Calls waiting for room now.
    waiters: AtomicU64,
}

impl Starved {
    fn episodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Episode>> {
        self.episodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when `trunk`'s first window is open, if it is at `now_ms`.
    pub(super) fn open_until(&self, trunk: &str, now_ms: u64) -> Option<u64> {
        self.episodes().get(trunk).map(|e| e.until).filter(|until| *until > now_ms)
    }

    /// The ledger gave `trunk` less than asked, or a call found no room, at `now_ms`: start an
    /// episode or carry the live one on. Returns the end of its first window (maybe past).
    pub(super) fn short(&self, trunk: &str, now_ms: u64) -> u64 {
        let len = self.window_ms();
        let mut all = self.episodes();
        let e = all.entry(trunk.to_string()).or_default();
        if e.until == 0 || e.last + QUIET_MS <= now_ms {
            e.until = now_ms + len;
        }
        e.last = now_ms;
        e.until
    }

    /// Nothing of `trunk` was refused here in the last [`QUIET_MS`]: its starved mark may go.
    /// Asked once a quiet second, however the ledger answers.
    pub(super) fn quiet(&self, trunk: &str, now_ms: u64) -> bool {
        self.episodes().get(trunk).is_none_or(|e| e.last.max(e.cleared) + QUIET_MS <= now_ms)
    }

    /// This node asked the ledger to clear its starved mark of `trunk` at `now_ms`.
    pub(super) fn cleared(&self, trunk: &str, now_ms: u64) {
        self.episodes().entry(trunk.to_string()).or_default().cleared = now_ms;
    }

    /// A ledger write took `us` microseconds.
    pub(super) fn note_write(&self, us: u64, now_ms: u64) {
        self.written_ms.store(now_ms, Ordering::Relaxed);
        let old = self.write_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.write_us.store(new, Ordering::Relaxed);
    }

    /// The moving average of answered ledger writes, while one was answered within the last
    /// minute: an old average says nothing of the ledger now.
    pub(super) fn write_us(&self, now_ms: u64) -> Option<u64> {
        let fresh = now_ms.saturating_sub(self.written_ms.load(Ordering::Relaxed)) <= 60_000;
        Some(self.write_us.load(Ordering::Relaxed)).filter(|us| *us > 0 && fresh)
    }

    /// Whether a call waits for room now.
    pub(super) fn waiting(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) > 0
    }

    /// How long a first window stays open.
    pub(super) fn window_ms(&self) -> u64 {
        let trip = self.write_us.load(Ordering::Relaxed).div_ceil(1000);
        (trip * ROUND_TRIPS).clamp(WINDOW_MS.0, WINDOW_MS.1)
    }
}

/// Counts a waiting call for as long as it waits, however its wait ends (an admission abandoned
/// after the driver's budget is dropped mid-wait).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl super::EscrowAdmission {
    /// Until `ready()` holds (true), or `due` fires first (false), looking again on every change: a
    /// share given back or granted anywhere (an applied batch), a call ended or a grant here. It
    /// listens before it looks, so a change between the two is not missed.
    async fn when_ready(&self, ready: impl Fn() -> bool, due: impl std::future::Future<Output = ()>) -> bool {
        let applied = self.consensus.applied();
        tokio::pin!(due);
        loop {
            let ledger = applied.notified();
            let here = self.changed.notified();
            tokio::pin!(ledger, here);
            ledger.as_mut().enable();
            here.as_mut().enable();
            if ready() {
                return true;
            }
            tokio::select! {
                _ = &mut due => return false,
                _ = &mut ledger => {}
                _ = &mut here => {}
            }
        }
    }

    /// Wait until a call of `trunk` could find room (a slot free here, or something free in the
    /// ledger) or `until`; true for the first.
    pub(super) async fn wait_for_room(&self, trunk: &str, until: u64) -> bool {
        let room = || {
            let v = self.ledger_view(trunk);
            v.free() > 0 || self.escrow().has_share(trunk, v.over())
        };
        let wait = std::time::Duration::from_millis(until.saturating_sub(self.now_ms()));
        let _waiting = Waiting::new(&self.starved.waiters);
        self.when_ready(room, tokio::time::sleep(wait)).await
    }

    /// Another node waits for a trunk this node has spare of: give it back now, not at the next
    /// round. Run on every call's end and every applied batch, so the common answer is cheap.
    fn owes_starved(&self) -> bool {
        if self.reconciled.get().is_none() || !self.takes_calls || !self.consensus.local(|s| s.shares.any_starved_but(&self.node)) {
            return false;
        }
        let trunks = self.escrow().trunks();
        trunks.iter().any(|t| {
            let spare = self.escrow().spare_for_others(t) > 0;
            spare && self.consensus.local(|s| s.shares.starved_by_other(t, &self.node))
        })
    }

    /// Give back unused shares and repair the ledger, every [`super::TIDY_EVERY`] and at once when
    /// another node is starved of what this one has spare, for the node's life. Benchmarks run
    /// this same loop: a plain timer left a starved node's window to close before the spare came.
    pub async fn tidy_forever(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(super::TIDY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.until_tidy(&mut tick).await;
            self.tidy().await;
        }
    }

    /// Until the next tidy round is due: `tick`, or at once when another node is starved of what
    /// this one has spare (a call ended here, or the ledger marked someone starved).
    async fn until_tidy(&self, tick: &mut tokio::time::Interval) {
        self.when_ready(|| self.owes_starved(), async {
            tick.tick().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_window_of_an_episode_holds_calls() {
        let s = Starved::default();
        assert_eq!(s.open_until("t", 0), None);
        assert_eq!(s.short("t", 100), 130);
        assert_eq!(s.short("t", 120), 130, "the calls of one window close with it");
        assert_eq!(s.open_until("t", 129), Some(130));
        assert_eq!(s.open_until("t", 130), None);
        assert_eq!(s.short("t", 131), 130, "the episode goes on: no new window");
        assert_eq!(s.short("t", 1130), 130, "a refusal every second keeps it going");
        assert_eq!(s.short("t", 2130), 2160, "a second without one ended it");
        assert_eq!(s.open_until("u", 2131), None, "per trunk");
    }

    #[test]
    fn the_window_is_a_few_ledger_round_trips_within_bounds() {
        let s = Starved::default();
        assert_eq!(s.window_ms(), 30, "no write seen yet: the LAN floor");
        s.note_write(40_000, 0);
        assert_eq!(s.window_ms(), 120);
        for _ in 0..64 {
            s.note_write(500_000, 0);
        }
        assert_eq!(s.window_ms(), 400, "a slow ledger does not hold calls longer than the ceiling");
    }

    #[test]
    fn a_trunk_is_quiet_a_second_after_its_last_shortage() {
        let s = Starved::default();
        assert!(s.quiet("t", 0), "never short");
        s.short("t", 100);
        s.short("t", 500);
        assert!(!s.quiet("t", 1499));
        assert!(s.quiet("t", 1500));
        s.cleared("t", 1500);
        assert!(!s.quiet("t", 2000), "asked to clear: not again within a second");
        assert!(s.quiet("t", 2500));
    }
}

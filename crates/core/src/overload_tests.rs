//! The throttle against a small queueing model of the node: one server that finishes `CAP`
//! messages per millisecond, a taken call bringing `FOLLOW` more messages 2 ms later, a refused
//! one bringing its ACK.

use std::collections::VecDeque;

use super::*;

const CAP: usize = 30;
const FOLLOW: usize = 7;

#[derive(Clone, Copy)]
enum Item {
    New,
    Follow,
}

#[derive(Default)]
struct Model {
    queue: VecDeque<Item>,
    later: VecDeque<(u64, usize)>,
    answered: u64,
    refused: u64,
    max_queue: usize,
}

impl Model {
    /// One millisecond: follow-ups due arrive, `per_ms` new calls arrive, `CAP` messages are done.
    fn step(&mut self, t: &mut Throttle, per_ms: usize, now: u64) {
        while self.later.front().is_some_and(|(at, _)| *at <= now) {
            let (_, n) = self.later.pop_front().unwrap_or_default();
            self.queue.extend(std::iter::repeat_n(Item::Follow, n));
        }
        self.queue.extend(std::iter::repeat_n(Item::New, per_ms));
        self.max_queue = self.max_queue.max(self.queue.len());
        for _ in 0..CAP {
            let Some(item) = self.queue.pop_front() else { break };
            let backlog = self.queue.len();
            t.observe(backlog, now);
            if let Item::New = item {
                if t.admit(backlog, now) {
                    self.answered += 1;
                    self.later.push_back((now + 2, FOLLOW));
                } else {
                    self.refused += 1;
                    self.later.push_back((now + 2, 1));
                }
            }
        }
    }
}

/// Offer `per_ms` new calls every millisecond for `ms` ms from `start`.
fn run(t: &mut Throttle, m: &mut Model, per_ms: usize, ms: u64, start: u64) {
    for now in start..start + ms {
        m.step(t, per_ms, now);
    }
}

#[test]
fn light_load_is_never_limited() {
    let mut t = Throttle::new(ThrottleConfig::default());
    let mut m = Model::default();
    run(&mut t, &mut m, 2, 5_000, 0);
    assert_eq!(m.refused, 0);
    assert_eq!(t.rate(), None);
}

#[test]
fn twice_the_sustained_rate_keeps_most_of_it_and_a_short_queue() {
    // sustained: CAP / (1 + FOLLOW) calls per ms = 3.75; offer 7.5 (alternating 7 and 8)
    let mut t = Throttle::new(ThrottleConfig::default());
    let mut m = Model::default();
    for now in 0..2_000u64 {
        m.step(&mut t, if now % 2 == 0 { 7 } else { 8 }, now);
    }
    let (answered0, queue0) = (m.answered, m.max_queue);
    m.max_queue = 0;
    for now in 2_000..10_000u64 {
        m.step(&mut t, if now % 2 == 0 { 7 } else { 8 }, now);
    }
    let (answered, max_queue) = (m.answered - answered0, m.max_queue);
    println!(
        "warm-up: {answered0} answered, queue up to {queue0}; then {answered} answered, {} refused, queue up to {max_queue}, rate {:?}",
        m.refused,
        t.rate()
    );
    // the best split of the server's time between calls (1 + FOLLOW messages) and refusals (2)
    let best = (CAP as f64 - 7.5 * 2.0) / (1 + FOLLOW - 2) as f64 * 8_000.0;
    let ratio = answered as f64 / best;
    assert!(ratio >= 0.95, "answered {answered} of the best possible {best}: {ratio:.2}");
    assert!(t.rate().is_some());
    assert!(max_queue < ThrottleConfig::default().hard_backlog, "queue reached {max_queue}");
}

#[test]
fn the_limit_is_lifted_once_the_surge_is_over() {
    let mut t = Throttle::new(ThrottleConfig::default());
    let mut m = Model::default();
    run(&mut t, &mut m, 8, 3_000, 0);
    assert!(t.rate().is_some());
    run(&mut t, &mut m, 1, 5_000, 3_000);
    assert_eq!(t.rate(), None);
    let refused = m.refused;
    run(&mut t, &mut m, 1, 1_000, 8_000);
    assert_eq!(m.refused, refused, "refused once lifted");
}

#[test]
fn past_the_hard_ceiling_everything_new_is_refused() {
    let mut t = Throttle::new(ThrottleConfig::default());
    assert!(!t.admit(2_001, 0));
    assert!(t.admit(2_000, 0));
}

#[test]
fn the_rate_never_drops_below_its_floor() {
    let cfg = ThrottleConfig::default();
    let mut t = Throttle::new(cfg);
    for now in 0..5_000 {
        t.observe(cfg.hard_backlog, now); // always far behind, nothing taken
    }
    assert_eq!(t.rate(), Some(cfg.min_rate));
    let taken = (5_000..6_000).filter(|&now| t.admit(cfg.target_backlog, now)).count();
    assert!((15..=25).contains(&taken), "{taken} taken in a second at a floor of {}", cfg.min_rate);
}

#[test]
fn a_clock_stepping_back_does_not_panic_or_stall() {
    let mut t = Throttle::new(ThrottleConfig::default());
    t.observe(10, 1_000);
    t.observe(10, 500);
    t.observe(10, 700);
    assert!(t.admit(0, 400));
}

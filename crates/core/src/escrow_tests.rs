//! Escrow tests: the ledger's bounds, and a randomized walk of several nodes whose ledger writes
//! land late (as Raft commits do) checking property 1 after every step.

use super::*;

#[test]
fn the_ledger_never_grants_past_the_limit() {
    let mut s = Shares::default();
    assert_eq!(s.reserve("t", "a", 4, 10), 4);
    assert_eq!(s.reserve("t", "b", 8, 10), 6, "only what is left");
    assert!(s.is_starved("t", "b") && s.starved_by_other("t", "a") && !s.starved_by_other("t", "b"));
    assert_eq!(s.reserve("t", "c", 1, 10), 0);
    s.shrink("t", "a", 1);
    s.shrink("t", "a", 1);
    assert_eq!(s.reserve("t", "b", 3, 10), 3);
    assert!(!s.is_starved("t", "b"), "a full grant clears the mark");
    assert_eq!(s.total("t"), 10);
    s.release_node("b");
    assert_eq!((s.total("t"), s.share("t", "a"), s.share("t", "b")), (1, 1, 0));
    assert!(!s.is_starved("t", "c") || s.starved_by_other("t", "a"));
    assert_eq!(s.reserve("t", "a", 3, 2), 1, "per-call slots count against the limit too");
}

#[test]
fn a_node_admits_within_its_share_and_keeps_one_batch() {
    let mut e = Escrow::default();
    assert_eq!(e.take("t", "c1", 160, false, 0), Take::Need { want: 10 });
    e.credit("t", 10);
    for i in 0..10 {
        assert_eq!(e.take("t", &format!("c{i}"), 160, false, 1), Take::Taken);
    }
    assert_eq!(e.take("t", "c0", 160, false, 1), Take::Held);
    assert_eq!(e.take("t", "c10", 160, false, 1), Take::Need { want: 10 });
    assert_eq!(e.take("t", "x", 160, true, 1), Take::Need { want: 10 }, "over the limit: no local admissions");
    for i in 0..10 {
        assert!(e.release(&format!("c{i}")));
    }
    assert!(!e.release("c0"), "twice is harmless");
    assert_eq!(e.surplus("t", 160, false, false, 2, 1000), 0, "busy: one batch of hysteresis");
    e.credit("t", 30);
    assert_eq!(e.surplus("t", 160, false, false, 2, 1000), 30, "busy: keep one batch");
    assert_eq!(e.usable("t"), 10);
    assert_eq!(e.surplus("t", 160, true, false, 2, 1000), 10, "someone is starved: give all spare");
    e.credit("t", 5);
    assert_eq!(e.surplus("t", 160, false, false, 5000, 1000), 5, "idle: give all spare");
    assert_eq!(e.usable("t"), 0);
}

/// A busy node keeps its rate's headroom (six renewal periods of admissions, about 3 s) in
/// reserve and asks for that much when dry, so a leader election does not dry it (issue 20: a
/// region loss doubles what the surviving ingress holds while its forwards time out).
#[test]
fn a_busy_node_keeps_and_asks_for_its_rates_headroom() {
    let mut e = Escrow::default();
    e.credit("t", 100);
    for i in 0..20 {
        assert_eq!(e.take("t", &format!("c{i}"), 160, false, 1), Take::Taken);
    }
    e.propose(2, 1000, |_| 0, |_| u32::MAX); // 20 admissions in the period: a headroom of 120
    for i in 0..20 {
        assert!(e.release(&format!("c{i}")));
    }
    assert_eq!(e.surplus("t", 160, false, false, 3, 1000), 0, "100 spare: within the headroom");
    e.credit("t", 40);
    assert_eq!(e.surplus("t", 160, false, false, 3, 1000), 20, "140 spare: back to the headroom");
    assert_eq!(e.surplus("t", 160, true, false, 3, 1000), 120, "someone is starved: all of it");
    assert_eq!(e.take("t", "d", 160, false, 4), Take::Need { want: 120 }, "asks for the headroom when dry");
    assert_eq!(e.shortfall("t", 160, false, false, 4, 1000), 120, "and ahead of need once under half of it");
    e.credit("t", 70);
    assert_eq!(e.shortfall("t", 160, false, false, 4, 1000), 0, "70 spare: more than half");
    assert_eq!(e.shortfall("t", 160, true, false, 4, 1000), 0, "not while someone is starved");
    assert_eq!(e.shortfall("t", 160, false, false, 5000, 1000), 0, "not when idle");
}

/// A node sizing its ceiling counts the nodes holding a share and itself, holding one or not;
/// a node whose share went back to nothing no longer counts.
#[test]
fn sharers_are_the_nodes_holding_a_share_and_the_one_asking() {
    let mut s = Shares::default();
    assert_eq!(s.sharers_with("t", "a"), 1, "alone, before any grant");
    s.reserve("t", "a", 4, 100);
    s.reserve("t", "b", 4, 100);
    s.reserve("u", "c", 4, 100);
    assert_eq!(s.sharers_with("t", "a"), 2, "itself once, and b");
    assert_eq!(s.sharers_with("t", "c"), 3, "c asks: a, b and c");
    s.shrink("t", "b", 0);
    assert_eq!(s.sharers_with("t", "a"), 1, "b gave its share back");
    assert_eq!(reserve_ceiling(100, s.sharers_with("t", "c")), 25);
}

/// Short calls at a high rate: six periods of admissions are more than the whole limit. The
/// reserve stops at the ceiling, so the nodes' reserves leave half the pool free (the escrow
/// bench's three nodes held all 100,000 slots as reserve with 12,800 calls up, and refused calls).
#[test]
fn the_rates_headroom_stops_at_the_reserve_ceiling() {
    assert_eq!(super::reserve_ceiling(100_000, 3), 16_666);
    assert_eq!(super::reserve_ceiling(20, 2), 5);
    assert_eq!(super::reserve_ceiling(20, 0), 10, "a node alone");
    assert_eq!(super::reserve_ceiling(1000, 100), 62, "never under a batch");
    let mut e = Escrow::default();
    e.credit("t", 100);
    for i in 0..50 {
        assert_eq!(e.take("t", &format!("c{i}"), 100, false, 1), Take::Taken);
    }
    for i in 0..50 {
        assert!(e.release(&format!("c{i}")));
    }
    assert_eq!(e.propose(2, 1000, |_| 6, |_| 25), vec![("t".to_string(), 25)], "the ceiling, not 300");
    assert_eq!(e.surplus("t", 100, false, false, 3, 1000), 75, "keeps the ceiling");
    assert_eq!(e.take("t", "d", 100, false, 4), Take::Taken);
    for i in 0..24 {
        assert_eq!(e.take("t", &format!("e{i}"), 100, false, 4), Take::Taken);
    }
    assert_eq!(e.take("t", "f", 100, false, 4), Take::Need { want: 25 }, "asks for the ceiling when dry");
}

/// Rate tokens last a second: a busy node keeps no rate headroom of them (three seconds' worth
/// would hoard the whole rate).
#[test]
fn rate_tokens_get_no_headroom() {
    let key = crate::cps::rate_key("t");
    let mut e = Escrow::default();
    e.credit(&key, 10);
    for i in 0..10 {
        assert_eq!(e.take(&key, &format!("c{i}"), 160, false, 1), Take::Taken);
    }
    e.propose(2, 1000, |_| 0, |_| u32::MAX);
    assert_eq!(e.take(&key, "d", 160, false, 3), Take::Need { want: 10 }, "one batch, not six periods of tokens");
    assert_eq!(e.shortfall(&key, 160, false, false, 3, 1000), 10, "a batch at most");
}

/// A ledger write of one node, in flight; `lost`: applied but its answer never arrives.
#[derive(Clone, Copy)]
enum Op {
    Reserve(u32),
    Shrink(u32),
}

/// Three nodes, one trunk; each node has at most one ledger write in flight (as the node does),
/// writes land late and some answers are lost. Each step checks: calls in progress cluster-wide
/// <= limit, and each node's in_use <= usable <= its share in the ledger.
#[test]
fn no_interleaving_over_admits() {
    const LIMIT: u32 = 40;
    let nodes = ["a", "b", "c"];
    let mut ledger = Shares::default();
    let mut esc: Vec<Escrow> = (0..3).map(|_| Escrow::default()).collect();
    let mut inflight: Vec<Option<Op>> = vec![None; 3];
    let mut answers: Vec<Option<u32>> = vec![None; 3];
    let mut resync = [false; 3];
    let mut calls: Vec<(usize, String)> = Vec::new();
    let mut x: u64 = 7;
    let mut rnd = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut admitted = 0u32;
    for step in 0..100_000u64 {
        let n = rnd(3) as usize;
        let idle = inflight[n].is_none() && answers[n].is_none();
        match rnd(6) {
            0 | 1 => {
                let call = format!("{step}");
                let over = ledger.total("t") > LIMIT;
                match esc[n].take("t", &call, LIMIT, over, step) {
                    Take::Taken => {
                        calls.push((n, call));
                        admitted += 1;
                    }
                    Take::Need { want } if idle => inflight[n] = Some(Op::Reserve(want)),
                    Take::Need { .. } => {}
                    Take::Held | Take::Capped => unreachable!("one call per step, no lease"),
                }
            }
            2 if !calls.is_empty() => {
                let i = rnd(calls.len() as u64) as usize;
                let (n, call) = calls.swap_remove(i);
                assert!(esc[n].release(&call));
            }
            3 => match inflight[n].take() {
                Some(Op::Reserve(want)) => {
                    let g = ledger.reserve("t", nodes[n], want, LIMIT);
                    if rnd(10) == 0 {
                        resync[n] = true; // the grant is lost with its answer
                    } else {
                        answers[n] = Some(g);
                    }
                }
                Some(Op::Shrink(to)) => ledger.shrink("t", nodes[n], to),
                None => {}
            },
            4 => {
                if let Some(g) = answers[n].take() {
                    esc[n].credit("t", g);
                }
            }
            5 if idle => {
                let starved = ledger.starved_by_other("t", nodes[n]);
                let give = esc[n].surplus("t", LIMIT, starved, false, step, 20);
                if give > 0 || resync[n] {
                    resync[n] = false;
                    inflight[n] = Some(Op::Shrink(esc[n].usable("t")));
                }
            }
            _ => {}
        }
        let in_progress: u32 = (0..3).map(|i| esc[i].in_use("t")).sum();
        assert!(in_progress <= LIMIT, "step {step}: {in_progress} calls in progress, limit {LIMIT}");
        assert!(ledger.total("t") <= LIMIT);
        for i in 0..3 {
            assert!(esc[i].in_use("t") <= esc[i].usable("t"));
            assert!(esc[i].usable("t") <= ledger.share("t", nodes[i]), "step {step} node {i}");
        }
    }
    assert!(admitted > 1000, "the walk admitted calls ({admitted})");
}

#[test]
fn under_a_lease_a_node_admits_no_more_than_its_last_committed_renewal_reported() {
    let mut e = Escrow::leased();
    e.credit("t", 10);
    assert_eq!(e.take("t", "c1", 160, false, 0), Take::Capped, "nothing reported yet");
    assert_eq!(e.propose(0, 1000, |_| 2, |_| u32::MAX), vec![("t".to_string(), 2)]);
    assert_eq!(e.take("t", "c1", 160, false, 0), Take::Capped, "not committed yet");
    e.renewed();
    assert_eq!(e.take("t", "c1", 160, false, 0), Take::Taken);
    assert_eq!(e.take("t", "c2", 160, false, 0), Take::Taken);
    assert_eq!(e.take("t", "c3", 160, false, 0), Take::Capped);
    // a renewal in flight reporting more does not raise the cap until it commits
    assert_eq!(
        e.propose(0, 1000, |_| 3, |_| u32::MAX),
        vec![("t".to_string(), 14)],
        "the headroom: 3, or six times the 2 admissions since the last renewal"
    );
    assert_eq!(e.cap("t"), 2);
    e.not_renewed();
    assert_eq!(e.cap("t"), 2, "unknown fate: the lower of both");
    // one reporting less lowers it at once
    e.release("c1");
    assert_eq!(e.propose(0, 1000, |_| 0, |_| u32::MAX), vec![("t".to_string(), 1)]);
    assert_eq!(e.cap("t"), 1);
    e.renewed();
    assert_eq!(e.take("t", "c4", 160, false, 0), Take::Capped);
    e.propose(0, 1000, |_| 8, |_| u32::MAX);
    e.renewed();
    assert_eq!(e.take("t", "c4", 160, false, 0), Take::Taken);
    // the ledger cut the share to 3 after a lapse, 1 of them for an earlier run's call
    e.cut("t", 3, 1);
    assert_eq!(e.usable("t"), 2);
    assert_eq!(e.take("t", "c5", 160, false, 0), Take::Need { want: 10 });
    // quiet for a while: no headroom reported, only the calls in progress
    assert_eq!(e.propose(5000, 1000, |_| 8, |_| u32::MAX), vec![("t".to_string(), 2)]);
    // busy: the headroom follows the rate (six times the admissions since the last renewal)
    e.renewed();
    e.credit("t", 20);
    e.propose(5000, 10_000, |_| 3, |_| u32::MAX);
    e.renewed();
    for i in 0..3 {
        assert_eq!(e.take("t", &format!("r{i}"), 160, false, 5001), Take::Taken);
    }
    assert_eq!(e.propose(5002, 1000, |_| 1, |_| u32::MAX), vec![("t".to_string(), 5 + 18)]);
}

#[test]
fn an_unanswered_renewal_leaves_no_more_usable_than_the_last_report_covered() {
    let mut e = Escrow::leased();
    e.credit("t", 10);
    e.credit("t/cps", 5);
    e.propose(0, 1000, |_| 2, |_| u32::MAX);
    e.renewed();
    assert_eq!(e.take("t", "c1", 160, false, 0), Take::Taken);
    assert_eq!(e.take("t/cps", "k1", 5, false, 0), Take::Taken);
    // the next renewal reports calls plus headroom; its answer is lost
    e.propose(0, 1000, |_| 2, |_| u32::MAX);
    e.not_renewed();
    e.cut_to_cap();
    assert_eq!(e.usable("t"), e.cap("t"), "no more than a lapse's cut would leave");
    assert!(e.usable("t") >= e.in_use("t"), "the calls in progress stay covered");
    assert_eq!(e.usable("t/cps"), 0, "a lapse gives a rate pool's tokens back");
    assert_eq!(e.take("t", "c2", 160, false, 0), Take::Taken, "admissions go on within the cap");
}

#[test]
fn a_renewal_and_a_request_to_the_ledger_cover_the_calls_waiting_here() {
    // a burst on a quiet trunk: nothing admitted since the last renewal, 9 calls being decided
    let mut e = Escrow::leased();
    e.credit("t", 20);
    for i in 0..9 {
        e.asking("t");
        assert_eq!(e.take("t", &format!("c{i}"), 20, false, 0), Take::Capped);
    }
    assert_eq!(e.propose(0, 1000, |_| 1, |_| u32::MAX), vec![("t".to_string(), 9)], "the waiting calls, not one batch");
    e.renewed();
    for i in 0..9 {
        assert_eq!(e.take("t", &format!("c{i}"), 20, false, 0), Take::Taken, "call {i}");
        e.asked("t");
    }
    // decided: the next renewal reports what it sees, not the burst again
    assert_eq!(e.propose(0, 1000, |_| 1, |_| u32::MAX), vec![("t".to_string(), 9 + 54)]);
    assert_eq!(e.propose(0, 1000, |_| 1, |_| u32::MAX), vec![("t".to_string(), 10)]);
    // the share used up with 12 calls waiting: one request for all of them, not one each
    let mut e = Escrow::leased();
    for _ in 0..12 {
        e.asking("t");
    }
    assert_eq!(e.take("t", "d0", 20, false, 0), Take::Need { want: 12 });
}

/// A leased escrow with 5 of trunk `t`, a renewal covering them, and one call admitted.
fn one_call_in_a_share_of_five() -> Escrow {
    let mut e = Escrow::leased();
    e.credit("t", 5);
    e.propose(0, 1000, |_| 5, |_| u32::MAX);
    e.renewed();
    assert_eq!(e.take("t", "c1", 20, false, 0), Take::Taken);
    e
}

#[test]
fn a_starved_node_is_given_only_the_spare_no_call_here_waits_for() {
    let mut e = one_call_in_a_share_of_five();
    // two calls being decided here (say, waiting for a renewal): 4 spare, 2 of them wanted
    e.asking("t");
    e.asking("t");
    assert_eq!(e.surplus("t", 20, true, false, 1, 1000), 2);
    assert_eq!(e.usable("t"), 3);
    e.asked("t");
    e.asked("t");
    assert_eq!(e.surplus("t", 20, true, false, 1, 1000), 2, "decided: the rest goes too");
    // nobody starved: a request granted for 9 waiting calls is not given back as surplus, even
    // when they waited longer than a quiet second
    let mut e = Escrow::leased();
    e.credit("t", 9);
    for _ in 0..9 {
        e.asking("t");
    }
    assert_eq!(e.surplus("t", 20, false, false, 0, 1000), 0);
    assert_eq!(e.surplus("t", 20, false, false, 5000, 1000), 0);
    assert_eq!(e.propose(5000, 1000, |_| 1, |_| u32::MAX), vec![("t".to_string(), 9)], "reported, however long they waited");
    for _ in 0..9 {
        e.asked("t");
    }
    assert_eq!(e.surplus("t", 20, false, false, 5000, 1000), 9, "decided and quiet: all of it");
    let mut e = one_call_in_a_share_of_five();
    e.asking("t");
    // over the limit, every spare slot goes whoever waits
    assert_eq!(e.surplus("t", 20, true, true, 1, 1000), 4);
}

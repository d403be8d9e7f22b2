//! The order in which a name's targets are tried (RFC 2782 "Usage rules", as RFC 3263 section 4.4
//! uses them): lowest priority first; within one priority, a weighted random draw, repeated over
//! the targets not yet drawn, with zero-weight targets first in line. The draws come in as an
//! argument, so the engine replays the same order from its seed.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One address a name resolved to, with the SRV record's priority and weight (an A/AAAA answer
/// without SRV: priority 0, weight 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub addr: SocketAddr,
}

/// `targets` in the order to try them, drawing from `draw` (any `u64`s; uniform is fair).
pub fn order(targets: &[SrvTarget], mut draw: impl FnMut() -> u64) -> Vec<SocketAddr> {
    let mut rest: Vec<SrvTarget> = targets.to_vec();
    // stable: zero weights first within a priority, then the order the answer gave
    rest.sort_by_key(|t| (t.priority, t.weight != 0));
    let mut out = Vec::with_capacity(rest.len());
    while let Some(first) = rest.first().copied() {
        let group: Vec<usize> = (0..rest.len()).filter(|&i| rest[i].priority == first.priority).collect();
        let total: u64 = group.iter().map(|&i| u64::from(rest[i].weight)).sum();
        let pick = draw() % (total + 1);
        let mut running = 0;
        let chosen = group
            .iter()
            .copied()
            .find(|&i| {
                running += u64::from(rest[i].weight);
                running >= pick
            })
            .unwrap_or(group[0]);
        out.push(rest.remove(chosen).addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(priority: u16, weight: u16, port: u16) -> SrvTarget {
        SrvTarget { priority, weight, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    #[test]
    fn lower_priority_always_first() {
        let targets = [t(20, 100, 2), t(10, 1, 1), t(30, 0, 3)];
        for seed in 0..50u64 {
            let mut s = seed;
            let got = order(&targets, || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                s >> 11
            });
            assert_eq!(got.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![1, 2, 3]);
        }
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        let targets = [t(10, 1, 1), t(10, 3, 2)];
        let mut s = 7u64;
        let mut first = [0u32; 3];
        for _ in 0..4000 {
            let got = order(&targets, || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s >> 11
            });
            assert_eq!(got.len(), 2, "every target once");
            first[got[0].port() as usize] += 1;
        }
        // about 1 in 4 and 3 in 4 (the draw over 0..=4 gives weight 1 two chances of five)
        assert!((1200..2000).contains(&first[1]), "{first:?}");
        assert!((2000..2800).contains(&first[2]), "{first:?}");
    }

    #[test]
    fn zero_weights_and_empty_answers() {
        assert!(order(&[], || 0).is_empty());
        let got = order(&[t(1, 0, 1), t(1, 0, 2)], || 0);
        assert_eq!(got.len(), 2);
    }
}

//! False alarms over a lossy WAN, in simulated time: a day (or any length) of one ingress node
//! watching the members of two other regions across links with a given RTT and loss, with the
//! product's failure detector ([`judge`]: heartbeats on gRPC, and SIP OPTIONS over UDP from SIP
//! members) and openraft 0.9's election rule for a follower across the WAN.
//! It counts what a real loss would trigger although nothing was lost: a member seen down, a whole
//! region seen down, and a follower starting an election.
//!
//! turmoil's TCP does not lose segments, so the cluster simulation cannot show what loss does to
//! gRPC: a lost segment holds back everything behind it on its connection until it is resent.
//! This model does, and pessimistically: a lost segment is resent only by the retransmission
//! timer (`srtt + 200 ms`, doubling while the same segment keeps being lost), never by fast
//! retransmit or a tail-loss probe, which Linux would often send sooner. UDP datagrams are lost
//! one by one. Delays are the RTT's half plus a uniform jitter. Everything comes from the seed.

use std::collections::{BTreeSet, VecDeque};

use hatrunk_core::ha::{judge, Liveness, Member};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The link and the timing under test.
#[derive(Debug, Clone)]
pub struct WanParams {
    pub hours: u64,
    pub rtt_ms: u64,
    /// Added to each one-way delay: uniform in 0..=jitter_ms.
    pub jitter_ms: u64,
    /// Chance that one packet (a segment or a datagram) is lost, each way.
    pub loss: f64,
    /// The retransmission timer is `rtt_ms + rto_min_ms` (Linux: srtt + max(4 rttvar, rto_min),
    /// rto_min 200 ms unless a route sets `rto_min`).
    pub rto_min_ms: u64,
    pub ping_interval_ms: u64,
    pub threshold_ms: u64,
    pub grace_ms: u64,
    pub recover_after: u32,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl WanParams {
    /// The product's defaults (`[cluster]` and the Raft timing) on a link of `rtt_ms` and `loss`.
    pub fn product(hours: u64, rtt_ms: u64, loss: f64) -> WanParams {
        let c = hatrunk_node::config::ClusterSection::default();
        WanParams {
            hours,
            rtt_ms,
            jitter_ms: 10,
            loss,
            rto_min_ms: 200,
            ping_interval_ms: c.ping_interval_ms,
            threshold_ms: c.failure_threshold_ms,
            grace_ms: c.heartbeat_grace_ms,
            recover_after: c.recover_after,
            heartbeat_ms: c.heartbeat_ms,
            election_min_ms: c.election_min_ms,
            election_max_ms: c.election_max_ms,
        }
    }
}

/// What happened in the run, all of it false alarms (nothing was really lost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WanReport {
    pub pings: u64,
    /// A member of region A or the witness seen going down.
    pub member_down: u64,
    /// Both nodes of region A seen down at once: traffic would leave the region.
    pub region_down: u64,
    /// The witness region (one member) seen down.
    pub witness_down: u64,
    /// Longest time any member stayed down (ms).
    pub longest_down_ms: u64,
    /// A follower across the WAN started an election while its leader was alive.
    pub elections: u64,
    /// Longest gap between two AppendEntries reaching that follower (ms).
    pub longest_heartbeat_gap_ms: u64,
}

/// One direction of a TCP connection: segments arrive in order, a lost one is resent by the
/// retransmission timer and holds back what was sent after it.
struct Stream {
    last_arrival: u64,
}

impl Stream {
    fn send(&mut self, at: u64, p: &WanParams, rng: &mut SmallRng) -> u64 {
        let rto = p.rtt_ms + p.rto_min_ms;
        let (mut t, mut backoff) = (at, rto);
        while rng.gen_bool(p.loss) {
            t += backoff;
            backoff = (backoff * 2).min(120_000);
        }
        let arrival = (t + one_way(p, rng)).max(self.last_arrival);
        self.last_arrival = arrival;
        arrival
    }
}

fn one_way(p: &WanParams, rng: &mut SmallRng) -> u64 {
    p.rtt_ms / 2 + rng.gen_range(0..=p.jitter_ms)
}

/// A request and its answer between the ingress and one member.
struct Peer {
    id: u64,
    out: Stream,
    back: Stream,
    /// Heartbeat answers (arrival times) still travelling, and whether one is out.
    answers: VecDeque<u64>,
    ping_out_until: u64,
    /// OPTIONS answers (arrival times) still travelling.
    sip_answers: VecDeque<u64>,
}

/// Run the model for `p.hours` from `seed`.
pub fn run(seed: u64, p: &WanParams) -> WanReport {
    let mut rng = SmallRng::seed_from_u64(seed);
    // region A: members 1 and 2; the witness (3) in region C; the ingress (4) in region B
    let mut peers: Vec<Peer> = [1u64, 2, 3]
        .iter()
        .map(|&id| Peer {
            id,
            out: Stream { last_arrival: 0 },
            back: Stream { last_arrival: 0 },
            answers: VecDeque::new(),
            ping_out_until: 0,
            sip_answers: VecDeque::new(),
        })
        .collect();
    let member = |id: u64, region: &str, sip: bool| Member {
        id,
        name: format!("n{id}"),
        region: region.into(),
        zone: format!("{region}-a"),
        sip,
        voter: true,
        sip_addr: if sip { format!("10.0.0.{id}:5060") } else { String::new() },
    };
    let members = [member(1, "a", true), member(2, "a", true), member(3, "c", false), member(4, "b", true)];
    let mut beats = Liveness::with_recovery(p.recover_after);
    let mut sip = Liveness::with_recovery(p.recover_after);
    let end = p.hours * 3_600_000;
    let step = 10;
    let mut report = WanReport::default();
    let mut down: BTreeSet<u64> = BTreeSet::new();
    let mut down_since = [0u64; 4];
    let mut next_ping = 0;
    // Raft: the leader in region A replicates to the ingress, one AppendEntries at a time
    let (mut to_follower, mut to_leader) = (Stream { last_arrival: 0 }, Stream { last_arrival: 0 });
    let timeout = rng.gen_range(p.election_min_ms..=p.election_max_ms);
    let (mut next_ae, mut ae_arrivals, mut last_ae) = (0u64, VecDeque::new(), 0u64);
    let mut now = 0;
    while now < end {
        if now >= next_ping {
            next_ping += p.ping_interval_ms;
            for peer in peers.iter_mut() {
                if now >= peer.ping_out_until {
                    // gRPC ping with the grace as its deadline; a late answer counts for nothing
                    let there = peer.out.send(now, p, &mut rng);
                    let back = peer.back.send(there, p, &mut rng);
                    report.pings += 1;
                    if back - now <= p.grace_ms {
                        peer.answers.push_back(back);
                    }
                    peer.ping_out_until = back.min(now + p.grace_ms);
                }
                // OPTIONS over UDP (the witness has no SIP)
                if peer.id != 3 && !rng.gen_bool(p.loss) && !rng.gen_bool(p.loss) {
                    let back = now + one_way(p, &mut rng) + one_way(p, &mut rng);
                    let at = peer.sip_answers.partition_point(|&a| a <= back);
                    peer.sip_answers.insert(at, back);
                }
            }
        }
        for peer in peers.iter_mut() {
            while peer.answers.front().is_some_and(|&a| a <= now) {
                let a = peer.answers.pop_front().unwrap_or(now);
                beats.observe_within(peer.id, a, true, p.grace_ms);
            }
            while peer.sip_answers.front().is_some_and(|&a| a <= now) {
                let a = peer.sip_answers.pop_front().unwrap_or(now);
                sip.observe_within(peer.id, a, true, p.threshold_ms);
            }
        }
        if now >= 2_000 {
            let view = judge(&beats, Some(&sip), 4, &members, now, p.threshold_ms, p.grace_ms);
            for peer in &peers {
                let up = view.get(peer.id).is_some_and(|m| m.alive);
                let i = peer.id as usize;
                if !up && down.insert(peer.id) {
                    down_since[i] = now;
                    report.member_down += 1;
                    if peer.id == 3 {
                        report.witness_down += 1;
                    } else if down.contains(&(3 - peer.id)) {
                        report.region_down += 1;
                    }
                } else if up && down.remove(&peer.id) {
                    report.longest_down_ms = report.longest_down_ms.max(now - down_since[i]);
                }
            }
        }
        // AppendEntries: the next one when the last is answered and a heartbeat interval has passed
        if now >= next_ae {
            let there = to_follower.send(now, p, &mut rng);
            let back = to_leader.send(there, p, &mut rng);
            ae_arrivals.push_back(there);
            next_ae = back.max(now + p.heartbeat_ms);
        }
        while ae_arrivals.front().is_some_and(|&a| a <= now) {
            let a = ae_arrivals.pop_front().unwrap_or(now);
            let gap = a - last_ae;
            report.longest_heartbeat_gap_ms = report.longest_heartbeat_gap_ms.max(gap);
            // openraft 0.9: a follower elects once its leader lease (election_max_ms) and its own
            // timeout have passed since the last AppendEntries (checked on a tick; ignored here)
            if last_ae > 0 && gap > p.election_max_ms + timeout {
                report.elections += 1;
            }
            last_ae = a;
        }
        now += step;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(loss: f64) -> WanParams {
        WanParams {
            hours: 1,
            rtt_ms: 150,
            jitter_ms: 10,
            loss,
            rto_min_ms: 200,
            ping_interval_ms: 200,
            threshold_ms: 800,
            grace_ms: 3000,
            recover_after: 3,
            heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 550,
        }
    }

    #[test]
    fn a_clean_link_raises_no_alarm_and_heavy_loss_does() {
        let clean = run(1, &params(0.0));
        assert_eq!((clean.member_down, clean.elections), (0, 0), "{clean:?}");
        // a heartbeat interval, the jitter and the model's 10 ms step
        assert!(clean.longest_heartbeat_gap_ms <= 200, "{clean:?}");
        // the model can fail: at 15% loss members are seen down and followers elect
        let bad = run(1, &params(0.15));
        assert!(bad.member_down > 0 && bad.elections > 0, "{bad:?}");
    }

    /// Issue 20: a day at 150 ms RTT and 1% loss with the product's timing never sees region A
    /// down (both its nodes at once). `hatrunk-sim --wan-hours 24 --seeds N` runs more days.
    #[test]
    fn a_lossy_day_never_sees_a_region_down() {
        let r = run(20, &WanParams::product(24, 150, 0.01));
        assert_eq!((r.region_down, r.witness_down), (0, 0), "{r:?}");
    }

    #[test]
    fn a_run_is_its_seed() {
        assert_eq!(run(7, &params(0.05)), run(7, &params(0.05)));
    }
}

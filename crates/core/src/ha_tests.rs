//! Table tests for the failure detector and egress selection at every HA level.

use super::*;

fn m(id: u64, region: &str, zone: &str) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        region: region.into(),
        zone: zone.into(),
        sip: true,
        voter: true,
        sip_addr: format!("127.0.0.1:{}", 5000 + id),
    }
}

fn witness(id: u64, region: &str) -> Member {
    Member { sip: false, sip_addr: String::new(), ..m(id, region, "w") }
}

/// 2T: zone a = 1,2; zone b = 3,4; witness 5.
fn two_t() -> Vec<Member> {
    vec![m(1, "r1", "a"), m(2, "r1", "a"), m(3, "r1", "b"), m(4, "r1", "b"), witness(5, "r1")]
}

/// 2T+4T: r1 = {a: 1,2; b: 3,4}, r2 = {c: 5,6; d: 7,8}, witness 9 in r3.
fn both() -> Vec<Member> {
    let mut v = vec![m(1, "r1", "a"), m(2, "r1", "a"), m(3, "r1", "b"), m(4, "r1", "b")];
    v.extend([m(5, "r2", "c"), m(6, "r2", "c"), m(7, "r2", "d"), m(8, "r2", "d"), witness(9, "r3")]);
    v
}

fn live(members: &[Member], alive: &[u64], now: u64) -> Liveness {
    let mut l = Liveness::default();
    for mm in members {
        if alive.contains(&mm.id) {
            l.observe(mm.id, now, true);
        }
    }
    l
}

#[test]
fn detector_threshold_is_inclusive_and_then_down() {
    let mut l = Liveness::default();
    l.observe(2, 1000, true);
    assert_eq!(l.state(2, 1800, 800), (true, true));
    assert_eq!(l.state(2, 1801, 800), (false, false));
    assert_eq!(l.state(3, 0, 800), (false, false), "never heard: down");
}

#[test]
fn quorum_counts_voters_only_and_includes_self() {
    let ms = two_t();
    // self 1 + 2 alive of 5 voters: 3 > 2.5
    let v = live(&ms, &[2, 5], 0).view(1, &ms, 100, 800);
    assert!(v.quorum);
    let v = live(&ms, &[2], 0).view(1, &ms, 100, 800);
    assert!(!v.quorum, "2 of 5");
    let mut learner = ms.clone();
    for x in learner.iter_mut().skip(1) {
        x.voter = false;
    }
    assert!(Liveness::default().view(1, &learner, 0, 800).quorum, "the only voter is self");
    assert!(!Liveness::default().view(9, &ms, 0, 800).quorum, "not a member: no quorum");
}

#[test]
fn peer_without_quorum_is_not_healthy() {
    let ms = two_t();
    let mut l = live(&ms, &[2, 3, 4, 5], 0);
    l.observe(3, 0, false);
    let v = l.view(1, &ms, 10, 800);
    assert!(v.get(3).is_some_and(|x| x.alive && !x.healthy()));
    assert!(!v.get(5).is_some_and(|x| x.healthy()), "a witness never delivers");
}

#[test]
fn none_is_self_only() {
    let ms = two_t();
    let v = live(&ms, &[2, 3, 4, 5], 0).view(1, &ms, 0, 800);
    assert_eq!(egress_order(AdvancedHa::None, &v, None, 7), vec![1]);
    let lonely = Liveness::default().view(1, &ms, 0, 800);
    assert!(egress_order(AdvancedHa::None, &lonely, None, 0).is_empty(), "no quorum: no call");
}

#[test]
fn two_t_alternates_zones_and_prefers_self() {
    let ms = two_t();
    let v = live(&ms, &[2, 3, 4, 5], 0).view(1, &ms, 0, 800);
    let firsts: Vec<u64> = (0..8).map(|t| egress_order(AdvancedHa::TwoT, &v, None, t)[0]).collect();
    // zone a (self's zone) on even turns -> self; zone b on odd turns, rotating between 3 and 4
    assert_eq!(firsts, vec![1, 3, 1, 4, 1, 3, 1, 4]);
    assert_eq!(egress_order(AdvancedHa::TwoT, &v, None, 1), vec![3, 4, 1, 2], "then the other zone");
}

#[test]
fn two_t_zone_down_sends_everything_to_survivor() {
    let ms = two_t();
    let v = live(&ms, &[2, 5], 0).view(1, &ms, 0, 800);
    for t in 0..6 {
        let o = egress_order(AdvancedHa::TwoT, &v, None, t);
        assert!(!o.is_empty() && o.iter().all(|id| [1, 2].contains(id)), "turn {t}: {o:?}");
        assert_eq!(o[0], 1);
    }
    // seen from zone b's node 3 with zone a down: zone b only, self first
    let v = live(&ms, &[4, 5], 0).view(3, &ms, 0, 800);
    assert_eq!(egress_order(AdvancedHa::TwoT, &v, None, 0), vec![3, 4]);
}

#[test]
fn four_t_primary_region_then_secondary() {
    let ms = vec![m(1, "r1", "a"), m(2, "r1", "a"), m(3, "r2", "b"), m(4, "r2", "b"), witness(5, "r3")];
    let all = live(&ms, &[1, 2, 3, 4, 5], 0);
    let v = all.view(3, &ms, 0, 800);
    let o = egress_order(AdvancedHa::FourT, &v, Some("r1"), 0);
    assert_eq!(o, vec![1, 2, 3, 4], "region 1 first even from a region-2 ingress");
    assert_eq!(egress_order(AdvancedHa::FourT, &v, Some("r1"), 1)[0], 2, "rotates within the region");
    assert_eq!(egress_order(AdvancedHa::FourT, &v, Some("r2"), 0), vec![3, 4, 1, 2], "configured primary region");
    assert_eq!(egress_order(AdvancedHa::FourT, &v, Some("nowhere"), 0)[0], 1, "unknown region: the first by name");
    let down = live(&ms, &[4, 5], 0).view(3, &ms, 0, 800);
    assert_eq!(egress_order(AdvancedHa::FourT, &down, Some("r1"), 0), vec![3, 4]);
}

#[test]
fn both_levels_zone_then_region() {
    let ms = both();
    let ids: Vec<u64> = (1..=9).collect();
    let v = live(&ms, &ids, 0).view(5, &ms, 0, 800);
    let firsts: Vec<u64> = (0..4).map(|t| egress_order(AdvancedHa::TwoTFourT, &v, Some("r1"), t)[0]).collect();
    assert_eq!(firsts, vec![1, 3, 2, 4], "both zones of region 1, rotating nodes");
    // one zone of r1 lost: the other zone of r1
    let v = live(&ms, &[3, 4, 6, 7, 8, 9], 0).view(5, &ms, 0, 800);
    for t in 0..4 {
        assert!([3, 4].contains(&egress_order(AdvancedHa::TwoTFourT, &v, Some("r1"), t)[0]));
    }
    // both zones of r1 lost: region 2, zones alternating
    let v = live(&ms, &[6, 7, 8, 9], 0).view(5, &ms, 0, 800);
    let o0 = egress_order(AdvancedHa::TwoTFourT, &v, Some("r1"), 0);
    let o1 = egress_order(AdvancedHa::TwoTFourT, &v, Some("r1"), 1);
    assert_eq!(o0[0], 5);
    assert!([7, 8].contains(&o1[0]));
    assert!(o0.iter().all(|id| (5..=8).contains(id)));
}

#[test]
fn a_member_back_from_down_needs_answers_in_a_row() {
    let mut l = Liveness::with_recovery(3);
    l.observe_within(2, 0, true, 800);
    assert_eq!(l.state(2, 100, 800), (true, true), "never down: up from its first answer");
    assert_eq!(l.state(2, 900, 800), (false, false), "silent past the threshold");
    // a flapping link: one answer after the gap is not enough
    l.observe_within(2, 1000, true, 800);
    assert!(!l.state(2, 1000, 800).0);
    l.observe_within(2, 1200, true, 800);
    assert!(!l.state(2, 1200, 800).0);
    l.observe_within(2, 1400, true, 800);
    assert!(l.state(2, 1400, 800).0, "three answers in a row");
    // another gap starts the count again
    l.observe_within(2, 3000, true, 800);
    assert!(!l.state(2, 3000, 800).0);
    let mut plain = Liveness::default();
    plain.observe_within(2, 0, true, 800);
    plain.observe_within(2, 5000, true, 800);
    assert!(plain.state(2, 5000, 800).0, "no hysteresis configured");
}

#[test]
fn a_member_whose_sip_is_silent_is_down_though_its_heartbeat_answers() {
    let ms = vec![m(1, "r1", "a"), m(2, "r1", "b"), witness(3, "r1")];
    let mut grpc = Liveness::default();
    let mut sip = Liveness::with_recovery(2);
    for id in [2, 3] {
        grpc.observe_within(id, 1_000, true, 800);
    }
    sip.observe_within(2, 1_000, true, 800);
    let mut v = grpc.view(1, &ms, 1_100, 800);
    v.require_sip(&sip, 1_100, 800);
    assert!(v.get(2).is_some_and(|m| m.alive), "SIP answers: up");
    assert!(v.get(3).is_some_and(|m| m.alive), "a witness runs no SIP: its heartbeat decides");
    // SIP silent for longer than the threshold while the heartbeat goes on
    for id in [2, 3] {
        grpc.observe_within(id, 2_000, true, 800);
    }
    let mut v = grpc.view(1, &ms, 2_100, 800);
    v.require_sip(&sip, 2_100, 800);
    assert!(v.get(2).is_some_and(|m| !m.alive && !m.healthy()));
    assert!(v.quorum, "quorum counts heartbeats: the Raft voters are still reached");
    // back only after `recover_after` SIP answers in a row
    sip.observe_within(2, 2_200, true, 800);
    grpc.observe_within(2, 2_200, true, 800);
    let mut v = grpc.view(1, &ms, 2_250, 800);
    v.require_sip(&sip, 2_250, 800);
    assert!(v.get(2).is_some_and(|m| !m.alive));
    sip.observe_within(2, 2_400, true, 800);
    let mut v = grpc.view(1, &ms, 2_450, 800);
    v.require_sip(&sip, 2_450, 800);
    assert!(v.get(2).is_some_and(|m| m.alive));
}

/// Issue 20: a SIP member is judged by its OPTIONS within the threshold and by its heartbeats
/// within the grace, so a TCP stall alone does not mark it down; this node's quorum counts a voter
/// that answered either within the threshold, so a node cut off from everyone loses it fast.
#[test]
fn judge_reads_sip_fast_heartbeats_with_grace_and_quorum_from_either() {
    let ms = vec![m(1, "a", "a1"), m(2, "a", "a1"), m(3, "b", "b1")];
    let (mut beats, mut sip) = (Liveness::default(), Liveness::default());
    for id in [2, 3] {
        beats.observe(id, 0, true);
        sip.observe(id, 0, true);
    }
    // t=1500: OPTIONS answered by both, heartbeats stalled since 0 (a TCP segment lost twice)
    sip.observe(2, 1400, true);
    sip.observe(3, 1400, true);
    let v = judge(&beats, Some(&sip), 1, &ms, 1500, 800, 3000);
    assert!(v.get(2).is_some_and(|m| m.alive) && v.get(3).is_some_and(|m| m.alive), "a heartbeat stall alone is not down");
    assert!(v.quorum);
    // node 3's SIP silent past the threshold: down at once, whatever its heartbeat
    let v = judge(&beats, Some(&sip), 1, &ms, 2300, 800, 3000);
    assert!(!v.get(3).is_some_and(|m| m.alive) && !v.get(2).is_some_and(|m| m.alive));
    assert!(!v.quorum, "this node heard no other voter within 800 ms: cut off");
    // without SIP probes (a witness watching), heartbeats within the grace
    let v = judge(&beats, None, 1, &ms, 2300, 800, 3000);
    assert!(v.get(3).is_some_and(|m| m.alive) && v.quorum);
}

//! A trunk's calls-per-second limit across a cluster: two real nodes take a burst of calls at
//! once, and together admit no more than the limit allows for the time the burst covered; every
//! call refused for it got 503 and a CDR saying CPS_LIMIT.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn two_nodes_share_one_calls_per_second_limit() {
    let n1 = Node::member(39400, 1, true);
    let n2 = Node::member(39410, 2, false);
    join(&n1, &n2);
    let trace = n1.dir.path().join("pbx.msg");
    let _pbx = uas_traced(&scenario("uas_rr.xml"), 39421, &trace);
    n1.apply(&TrunkFile::new("rated", "3940", (39421, 39422)).limit(100).with("max_calls_per_second = 4").toml());
    let t0 = Instant::now();
    while !n2.has_trunk("rated") {
        assert!(t0.elapsed() < Duration::from_secs(10), "node 2 never saw the trunk:\n{}", n2.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // 20 calls at 40 per second into each node, both at once
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n1, 39430, "3940").calls(20).rate(40).run());
        let b = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n2, 39431, "3940").calls(20).rate(40).run());
        (a.join().expect("uac 1"), b.join().expect("uac 2"))
    });
    assert_eq!(a.ok + a.failed + b.ok + b.failed, 40);
    let rated = |c: &serde_json::Value| c["trunk"] == "rated";
    let mut cdrs = n1.wait_cdrs(rated, a.ok as usize + a.failed as usize);
    cdrs.extend(n2.wait_cdrs(rated, b.ok as usize + b.failed as usize));
    let answered: Vec<u64> = cdrs.iter().filter(|c| c["disposition"] == "ANSWERED").filter_map(|c| c["start_ms"].as_u64()).collect();
    let refused: Vec<_> = cdrs.iter().filter(|c| c["cause"] == "CPS_LIMIT").collect();
    assert_eq!(answered.len() + refused.len(), 40, "every call answered or refused for the rate: {cdrs:?}");
    assert!(refused.iter().all(|c| c["final_code"] == 503), "{refused:?}");
    assert!(!answered.is_empty(), "the limit admits some calls");
    // tokens are held a second from admission, which follows the INVITE by at most a ledger write
    let starts = cdrs.iter().filter_map(|c| c["start_ms"].as_u64());
    let (first, last) = (starts.clone().min().unwrap_or(0), starts.max().unwrap_or(0));
    let seconds = (last - first + 200).div_ceil(1000);
    assert!(answered.len() as u64 <= 4 * seconds, "{} calls admitted within {} ms at 4 per second", answered.len(), last - first);
    eprintln!("cps: {} answered, {} refused over {} ms", answered.len(), refused.len(), last - first);
    assert_eq!(a.ok + b.ok, answered.len() as u64);
    // a second later the limit admits again; at a steady 2 x 5 calls per second for 4 s, it
    // admits its 4 per second, not fewer (tokens come back and move between the nodes)
    std::thread::sleep(Duration::from_millis(1500));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n1, 39432, "3940").calls(20).rate(5).run());
        let b = s.spawn(|| Uac::new(&scenario("uac_rr.xml"), &n2, 39433, "3940").calls(20).rate(5).run());
        (a.join().expect("uac 1"), b.join().expect("uac 2"))
    });
    let ok = a.ok + b.ok;
    eprintln!("cps steady: {ok} of 40 answered in about 4 s");
    assert!((12..=20).contains(&ok), "4 per second over about 4 s: {ok} answered");
    // exact where it counts: the PBX never saw more than 4 new calls within a second (less 10 ms
    // for the node-to-PBX delay varying between two calls)
    let invites = invite_times(&trace);
    assert_eq!(invites.len() as u64, answered.len() as u64 + ok, "one INVITE per answered call");
    let busiest = invites.iter().map(|t| invites.iter().filter(|u| **u >= *t && **u < *t + 990).count()).max().unwrap_or(0);
    assert!(busiest <= 4, "{busiest} INVITEs within a second at the PBX: {invites:?}");
}

/// When the traced PBX received each new INVITE (ms since midnight; retransmissions once).
fn invite_times(trace: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut at = None;
    let mut invite = false;
    for line in text.lines() {
        if line.starts_with("-----") {
            // ----------------------------------------------- 2026-11-30\t18:35:12.123456
            let clock = line.split_whitespace().last().unwrap_or("");
            let mut parts = clock.split(':');
            let (h, m, s) = (parts.next(), parts.next(), parts.next());
            at = match (h.and_then(|v| v.parse::<u64>().ok()), m.and_then(|v| v.parse::<u64>().ok()), s.and_then(|v| v.parse::<f64>().ok()))
            {
                (Some(h), Some(m), Some(s)) => Some((h * 3600 + m * 60) * 1000 + (s * 1000.0) as u64),
                _ => None,
            };
            invite = false;
        } else if line.starts_with("INVITE ") {
            invite = true;
        } else if invite && (line.starts_with("Call-ID:") || line.starts_with("i:")) {
            invite = false;
            if let Some(t) = at.filter(|_| seen.insert(line.to_string())) {
                out.push(t);
            }
        }
    }
    out.sort();
    out
}

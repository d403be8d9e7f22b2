//! A trunk's calls-per-second limit across a cluster (issue 19's test): a limit of 10 over three
//! real nodes, three SIPp callers at 10 calls/s each for 20 s. At most 10 a second for as long as
//! they ran (their starts a little apart), plus one batch, are answered; the PBX never sees more
//! than 10 new calls within a second; every other call gets 503 with Retry-After and a CDR saying
//! CPS_LIMIT.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn three_nodes_share_one_calls_per_second_limit() {
    let n1 = Node::member(39400, 1, true);
    let n2 = Node::member(39410, 2, false);
    let n3 = Node::member(39420, 3, false);
    join(&n1, &n2);
    join(&n1, &n3);
    let trace = n1.dir.path().join("pbx.msg");
    let _pbx = uas_traced(&scenario("uas_rr.xml"), 39431, &trace);
    n1.apply(&TrunkFile::new("rated", "3940", (39431, 39432)).limit(1000).with("max_calls_per_second = 10").toml());
    let t0 = Instant::now();
    while !(n2.has_trunk("rated") && n3.has_trunk("rated")) {
        assert!(t0.elapsed() < Duration::from_secs(10), "the trunk did not reach every node");
        std::thread::sleep(Duration::from_millis(100));
    }
    let nodes = [&n1, &n2, &n3];
    let traces: Vec<_> = (0..3).map(|i| n1.dir.path().join(format!("caller{i}.msg"))).collect();
    let runs: Vec<Calls> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .zip(&traces)
            .enumerate()
            .map(|(i, (node, trace))| {
                s.spawn(move || {
                    let t = trace.to_string_lossy().into_owned();
                    let extra = ["-trace_msg", "-message_file", t.as_str()];
                    Uac::new(&scenario("uac_rr.xml"), node, 39440 + i as u16, "3940").calls(200).rate(10).args(&extra).run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("caller")).collect()
    });
    let answered: u64 = runs.iter().map(|r| r.ok).sum();
    let offered: u64 = runs.iter().map(|r| r.ok + r.failed).sum();
    assert_eq!(offered, 600);
    let invites = invite_times(&trace);
    let busiest = invites.iter().map(|t| invites.iter().filter(|u| **u >= *t && **u < *t + 990).count()).max().unwrap_or(0);
    let span_s = (invites.last().unwrap_or(&0) - invites.first().unwrap_or(&0)) as f64 / 1000.0;
    eprintln!(
        "cps: {answered} of {offered} answered over {span_s:.1} s ({:.2}/s against a limit of 10), busiest second {busiest}",
        answered as f64 / span_s.max(1.0)
    );
    // 10 per second for as long as the callers ran (20 s each, their starts a little apart), plus
    // one batch; the busiest second below is the exact check
    let seconds = (span_s.floor() as u64 + 1).max(20);
    assert!(answered <= 10 * seconds + 1, "at most 10 x {seconds} plus one batch: {answered}");
    assert!(answered >= 150, "the limit's rate is used, not starved: {answered}");
    assert!(busiest <= 10, "{busiest} INVITEs within a second at the PBX");
    assert_eq!(invites.len() as u64, answered, "one INVITE per answered call");
    // every refusal: 503 with Retry-After (each 503 SIPp logged, retransmissions included; a file's
    // last block may be cut short when SIPp exits), and its CDR
    let mut refusals = 0;
    for t in &traces {
        let text = std::fs::read_to_string(t).unwrap_or_default();
        let blocks: Vec<&str> = text.split("\n-----").collect();
        for (i, b) in blocks.iter().enumerate().filter(|(_, b)| b.contains("SIP/2.0 503")) {
            refusals += 1;
            let why = || {
                nodes
                    .iter()
                    .flat_map(|n| n.log().lines().filter(|l| l.contains("admission")).map(str::to_string).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            };
            assert!(b.contains("Retry-After: 1") || i + 1 == blocks.len(), "a 503 without Retry-After: {b}\n{:#?}", why());
        }
    }
    assert!(refusals as u64 >= offered - answered, "the rest got 503: {refusals} for {} calls", offered - answered);
    let mut limited = 0;
    for n in nodes {
        limited += n.cdrs().iter().filter(|c| c["trunk"] == "rated" && c["cause"] == "CPS_LIMIT").count();
    }
    assert_eq!(limited as u64, offered - answered);
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

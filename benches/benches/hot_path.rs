//! The per-call hot pieces: parsing and normalising a typical INVITE, and one routing decision
//! (plan start + failover decision on a 503), and finding an attempt's address (literal or cached
//! name).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use hatrunk_core::health::HealthState;
use hatrunk_core::plan::CallPlan;
use hatrunk_core::policy::{FailoverPolicy, Outcome};
use hatrunk_core::rr::RoundRobin;
use hatrunk_core::trunk::Mode;

const INVITE: &[u8] = b"INVITE sip:6561230000@10.0.0.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:6561230000@10.0.0.5>\r\n\
From: \"Carrier\" <sip:+6598765432@10.0.0.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@10.0.0.1\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+6598765432@10.0.0.1:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 126\r\n\r\n\
v=0\r\no=- 53655765 2353687637 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";

fn parse_invite(c: &mut Criterion) {
    assert!(hatrunk_sip::parse::parse(INVITE, true).is_ok(), "the benchmark INVITE must be valid");
    c.bench_function("parse+normalise typical INVITE", |b| b.iter(|| hatrunk_sip::parse::parse(black_box(INVITE), true)));
    let msg = hatrunk_sip::parse::parse(INVITE, true).expect("parses");
    c.bench_function("serialise typical INVITE", |b| b.iter(|| black_box(&msg).to_bytes()));
}

fn routing_decision(c: &mut Criterion) {
    let mut rr = RoundRobin::default();
    c.bench_function("routing decision: auto-failover start + 503", |b| {
        b.iter(|| {
            let (mut plan, step) = CallPlan::start(Mode::AutoFailover, FailoverPolicy::Current, &mut rr, |_| HealthState::Unknown);
            black_box(step);
            black_box(plan.on_outcome(Outcome::Final(black_box(503))))
        })
    });
}

/// What a call's attempt costs to find its address: a literal target against a name read from the
/// DNS cache (two SRV targets put in RFC 2782 order). Resolution itself is never on this path.
fn target_lookup(c: &mut Criterion) {
    use hatrunk_core::srv::SrvTarget;
    use hatrunk_core::trunk::{parse_sip_target, Transport};
    use hatrunk_node::dns::{DnsCache, DnsKey, Entry};
    c.bench_function("target: literal address", |b| {
        b.iter(|| {
            let t = parse_sip_target(black_box("sip:192.0.2.10:5060")).expect("target");
            black_box(t.host.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, t.port)))
        })
    });
    let cache = DnsCache::default();
    let key = DnsKey { host: "pbx.example.com".into(), port: None, transport: Transport::Udp };
    let targets = ["192.0.2.10:5060", "192.0.2.11:5060"]
        .iter()
        .enumerate()
        .map(|(i, a)| SrvTarget { priority: 10 + i as u16, weight: 1, addr: a.parse().expect("addr") })
        .collect();
    cache.put(key, Entry { targets, fresh_until: u64::MAX, stale_until: u64::MAX, problem: None });
    let mut n = 0u64;
    c.bench_function("target: name from the DNS cache (SRV, 2 targets)", |b| {
        b.iter(|| {
            let t = parse_sip_target(black_box("sip:pbx.example.com")).expect("target");
            let key = DnsKey { host: t.host, port: t.port_given.then_some(t.port), transport: Transport::Udp };
            let found = cache.targets(&key, 1_000).expect("cached");
            black_box(hatrunk_core::srv::order(&found, || {
                n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
                n >> 16
            }))
        })
    });
}

criterion_group!(benches, parse_invite, routing_decision, target_lookup);
criterion_main!(benches);

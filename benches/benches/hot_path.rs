//! The per-call hot pieces: parsing and normalising a typical INVITE, and one routing decision
//! (plan start + failover decision on a 503).

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

criterion_group!(benches, parse_invite, routing_decision);
criterion_main!(benches);

//! An account reached by name: its addresses in SRV order within the account's time, before the
//! Secondary (RFC 3263 section 4.3), as the engine reads them from the DNS cache.

use std::net::SocketAddr;
use std::sync::Arc;

use hatrunk_core::ha::HealthView;
use hatrunk_core::pool::Decision;
use hatrunk_core::srv::SrvTarget;
use hatrunk_core::trunk::Transport;

use super::tests::{admit_id, answer, engine_with, from, member, sent_to, CARRIER, INVITE, SECONDARY};
use crate::dns::{DnsCache, DnsKey, Entry};

const A: &str = "10.0.1.1:5060";
const B: &str = "10.0.1.2:5060";

fn engine(targets: &[(&str, u16)]) -> super::Engine {
    let trunk = super::tests::TRUNK.replace("target = \"sip:10.0.0.1:5060\"", "target = \"sip:pbx.example.com\"");
    let cache = Arc::new(DnsCache::default());
    let targets = targets
        .iter()
        .map(|(a, priority)| SrvTarget { priority: *priority, weight: 1, addr: a.parse::<SocketAddr>().expect("addr") })
        .collect();
    let key = DnsKey { host: "pbx.example.com".into(), port: None, transport: Transport::Udp };
    cache.put(key, Entry { targets, fresh_until: u64::MAX, stale_until: u64::MAX, problem: None });
    engine_with(&trunk, HealthView::single(member(1, "z", "127.0.0.1:5060"))).with_dns(cache)
}

fn start(e: &mut super::Engine) {
    e.on_message(from(CARRIER, INVITE), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
}

/// A silent first address gets its share of the account's time (half of 1000 ms for two), then the
/// second; the Request-URI keeps the name.
#[tokio::test]
async fn a_silent_address_gives_way_to_the_next_within_the_account() {
    let mut e = engine(&[(B, 20), (A, 10)]);
    start(&mut e);
    let first = sent_to(&e.drain(), A);
    assert_eq!(first.len(), 1, "priority 10 first");
    assert!(first[0].uri().is_some_and(|u| u.contains("@pbx.example.com")), "{:?}", first[0].uri());
    e.on_tick(400);
    assert!(sent_to(&e.drain(), B).is_empty(), "not before its share");
    e.on_tick(502);
    let a = e.drain();
    let second = sent_to(&a, B);
    assert_eq!(second.len(), 1);
    assert!(sent_to(&a, SECONDARY).is_empty(), "the account is not done yet");
    e.on_message(from(B, &answer(&second[0], 200, "OK", B)), 600);
    assert_eq!(sent_to(&e.drain(), CARRIER).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![200]);
}

/// A 503 from the first address moves to the second at once; when both fail the Secondary gets
/// the call, and the account's timer still counts from its first address.
#[tokio::test]
async fn a_503_moves_to_the_next_address_then_the_secondary() {
    let mut e = engine(&[(A, 10), (B, 20)]);
    start(&mut e);
    let first = sent_to(&e.drain(), A);
    e.on_message(from(A, &answer(&first[0], 503, "Service Unavailable", A)), 50);
    let a = e.drain();
    assert_eq!(sent_to(&a, B).len(), 1, "the next address, at once");
    assert!(sent_to(&a, CARRIER).iter().all(|m| m.code() == Some(100) || m.code().is_none()), "nothing final upstream");
    // B says 100 Trying (so it is not silent) but nothing more: the account's 1000 ms run out
    // from when A was tried, and the Secondary gets the call
    let to_b = sent_to(&a, B);
    e.on_message(from(B, &answer(&to_b[0], 100, "Trying", B)), 60);
    e.drain();
    e.on_tick(990);
    assert!(sent_to(&e.drain(), SECONDARY).is_empty());
    e.on_tick(1002);
    assert_eq!(sent_to(&e.drain(), SECONDARY).len(), 1, "the account's time is up");
}

/// A name with no usable address: the account is unreachable at once.
#[tokio::test]
async fn a_name_without_addresses_fails_over_at_once() {
    let trunk = super::tests::TRUNK.replace("target = \"sip:10.0.0.1:5060\"", "target = \"sip:gone.example.com\"");
    let mut e = engine_with(&trunk, HealthView::single(member(1, "z", "127.0.0.1:5060")));
    start(&mut e);
    assert_eq!(sent_to(&e.drain(), SECONDARY).len(), 1);
}

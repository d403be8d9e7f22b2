//! Tests of the source and account guard.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn small() -> GuardLimits {
    GuardLimits {
        window_ms: 1_000,
        max_new_requests: 5,
        ban_ms: 10_000,
        auth_failures_per_source: 3,
        auth_failures_per_account: 4,
        auth_window_ms: 60_000,
        lockout_ms: 30_000,
        max_sources: 3,
    }
}

#[test]
fn a_flood_is_banned_and_the_ban_expires() {
    let mut g = Guard::new(small());
    let a = ip("192.0.2.1");
    for _ in 0..5 {
        assert_eq!(g.new_request(a, 100), Verdict::Pass);
    }
    assert_eq!(g.new_request(a, 100), Verdict::Banned);
    assert!(g.is_banned(a, 100));
    assert_eq!(g.new_request(a, 5_000), Verdict::Drop);
    assert_eq!(g.bans(5_000), vec![(a, 10_100)]);
    // another source is untouched
    assert_eq!(g.new_request(ip("192.0.2.2"), 100), Verdict::Pass);
    assert!(!g.is_banned(a, 10_100));
    assert_eq!(g.new_request(a, 10_100), Verdict::Pass);
    assert_eq!(g.bans_total(), 1);
}

#[test]
fn the_window_resets_and_a_steady_source_stays_in() {
    let mut g = Guard::new(small());
    let a = ip("192.0.2.1");
    for t in 0..100u64 {
        // 5 per second, every second: at the limit, never over it
        for _ in 0..5 {
            assert_eq!(g.new_request(a, t * 1_000), Verdict::Pass);
        }
    }
}

#[test]
fn flooding_while_banned_extends_the_ban() {
    let mut g = Guard::new(small());
    let a = ip("192.0.2.1");
    for _ in 0..6 {
        g.new_request(a, 0);
    }
    assert!(g.is_banned(a, 9_999));
    for _ in 0..6 {
        assert_eq!(g.new_request(a, 9_000), Verdict::Drop);
    }
    assert!(g.is_banned(a, 18_999));
    assert!(!g.is_banned(a, 19_000));
    assert_eq!(g.bans_total(), 1);
}

#[test]
fn password_guessing_bans_the_source_and_locks_the_account_elsewhere() {
    let mut g = Guard::new(small());
    let (pbx, attacker, other) = (ip("198.51.100.7"), ip("192.0.2.1"), ip("192.0.2.2"));
    g.auth_ok(pbx, "acme", 0);
    for _ in 0..3 {
        assert_eq!(g.auth_failed(attacker, "acme", 10), Verdict::Pass);
    }
    assert_eq!(g.auth_failed(attacker, "acme", 10), Verdict::Banned);
    assert!(g.is_banned(attacker, 10));
    // the fifth failure from anywhere locks the account...
    assert_eq!(g.auth_failed(other, "acme", 20), Verdict::Pass);
    assert!(g.account_locked(other, "acme", 21));
    // ...but not for the PBX that last authenticated, and not for ever
    assert!(!g.account_locked(pbx, "acme", 21));
    assert!(!g.account_locked(other, "acme", 30_020));
    assert!(!g.account_locked(other, "other-account", 21));
}

#[test]
fn failures_from_a_source_that_is_never_banned_lock_only_the_account() {
    let mut g = Guard::new(small());
    let (pbx, other) = (ip("198.51.100.7"), ip("192.0.2.2"));
    g.auth_ok(pbx, "acme", 0);
    for t in 0..10 {
        g.account_failed("acme", 10 + t);
    }
    assert!(g.bans(20).is_empty(), "no source is banned");
    assert!(g.account_locked(other, "acme", 21));
    assert!(!g.account_locked(pbx, "acme", 21), "the PBX that last authenticated still may");
}

#[test]
fn tables_are_bounded_and_swept() {
    let mut g = Guard::new(small());
    for i in 1..=3 {
        g.new_request(ip(&format!("192.0.2.{i}")), 0);
    }
    // full: a fourth source passes untracked
    assert_eq!(g.new_request(ip("192.0.2.4"), 10), Verdict::Pass);
    assert_eq!(g.tracked().0, 3);
    // once the others are idle past the windows, they are forgotten and room comes back
    g.sweep(120_000);
    assert_eq!(g.tracked().0, 0);
    for _ in 0..6 {
        g.new_request(ip("192.0.2.4"), 120_000);
    }
    assert!(g.is_banned(ip("192.0.2.4"), 120_000));
    g.sweep(125_000);
    assert!(g.is_banned(ip("192.0.2.4"), 125_000), "a ban outlives the sweep");
}

//! The checker checks: the same seed gives the same trace, and a deliberately broken build (one
//! that skips the pool check) fails the limit invariant on a scenario the real build passes.

use hatrunk_simulation::judge;
use hatrunk_simulation::run::Options;
use hatrunk_simulation::scenario::Scenario;

fn verdict(j: &hatrunk_simulation::Judged, name: &str) -> bool {
    j.verdicts.iter().find(|v| v.name == name).map(|v| v.ok()).expect("the invariant ran")
}

#[test]
fn a_build_that_skips_the_pool_check_fails_the_limit_invariant() {
    let sc = Scenario::named("lossy-network").expect("scenario");
    let good = judge(sc.clone(), 7, Options::default());
    assert!(good.passed(), "the real build must pass: {:?}", good.verdicts);
    let broken = judge(sc, 7, Options { broken_admission: true });
    assert!(!verdict(&broken, "calls_within_limit"), "skipping the pool check went unnoticed: {:?}", broken.verdicts);
}

#[test]
fn the_same_seed_replays_the_same_trace() {
    let sc = Scenario::named("2t-zone-loss").expect("scenario");
    let a = judge(sc.clone(), 3, Options::default());
    let b = judge(sc, 3, Options::default());
    assert!(a.calls > 50, "the run placed calls");
    assert_eq!(a.trace_hash, b.trace_hash);
    let c = judge(Scenario::named("2t-zone-loss").expect("scenario"), 4, Options::default());
    assert_ne!(a.trace_hash, c.trace_hash, "another seed is another run");
}

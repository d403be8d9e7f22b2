//! The checker checks: the same seed gives the same trace (run again as a user would, in a new
//! process), and a deliberately broken build (one that skips the pool check) fails the limit
//! invariant on a scenario the real build passes.

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

/// The reproduction promise: the same command, run again in a new process, replays the run.
#[test]
fn the_same_seed_replays_the_same_trace() {
    let hash = |seed: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hatrunk-sim"))
            .args(["--scenario", "2t-zone-loss", "--seed", seed])
            .output()
            .expect("run hatrunk-sim");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        text.lines().find_map(|l| l.strip_prefix("trace-hash: ")).map(str::to_string).expect("a trace-hash line")
    };
    let a = hash("3");
    assert_eq!(a.len(), 64);
    assert_eq!(a, hash("3"));
    assert_ne!(a, hash("4"), "another seed is another run");
}

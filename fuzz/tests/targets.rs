//! The CI side of fuzzing: every target over its seeds, over every input a fuzzer ever found
//! (`fuzz/regressions/<target>/`, kept forever), then a short randomised run of mutations of the
//! seeds (PROPTEST_CASES raises it). Long coverage-guided runs are `fuzz/run.sh`.

use std::path::PathBuf;

use hatrunk_fuzz::{seeds::seeds, TARGETS};
use proptest::prelude::*;

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().filter_map(|e| Some((e.path(), std::fs::read(e.path()).ok()?))).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_seed_and_every_found_input_passes() {
    for (name, f) in TARGETS {
        let s = seeds(name);
        assert!(!s.is_empty(), "{name} has no seeds");
        for input in &s {
            f(input);
        }
        for (path, input) in regressions(name) {
            eprintln!("{name}: {}", path.display());
            f(&input);
        }
    }
}

#[test]
fn the_sip_seeds_include_the_torture_messages() {
    assert!(seeds("sip").len() > 40, "../shared/sip-torture must sit beside the checkout");
}

/// A seed with `edits` applied: overwrite, insert, delete or duplicate a span.
fn mutate(mut v: Vec<u8>, edits: &[(u8, u16, u8)]) -> Vec<u8> {
    for &(op, at, b) in edits {
        let at = if v.is_empty() { 0 } else { at as usize % v.len() };
        match op % 4 {
            0 if !v.is_empty() => v[at] = b,
            1 => v.insert(at, b),
            2 if !v.is_empty() => drop(v.remove(at)),
            _ => {
                let end = (at + b as usize).min(v.len());
                let span = v[at..end].to_vec();
                v.splice(at..at, span);
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_seeds_never_break_a_target(t in 0usize..TARGETS.len(), pick in any::<u16>(),
                                         edits in proptest::collection::vec(any::<(u8, u16, u8)>(), 1..12)) {
        let (name, f) = TARGETS[t];
        let s = seeds(name);
        let seed = s[pick as usize % s.len()].clone();
        f(&mutate(seed, &edits));
    }

    #[test]
    fn random_bytes_never_break_a_target(t in 0usize..TARGETS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        (TARGETS[t].1)(&bytes);
    }
}

//! `hatrunk demo` end to end: nine real nodes, its own carrier and PBXes, a PBX failure, a zone and a
//! region lost and restored; the demo checks its own results and exits 0 only when they hold.

mod common;

use std::process::Command;

#[test]
fn demo_runs_every_act_and_passes_its_checks() {
    common::require_sipp(); // reserves the test port range
    let out = Command::new("timeout")
        .args(["180", common::hatrunk_bin(), "demo", "--base-port", "39000", "--act-secs", "5", "--rate", "10"])
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed ({:?}):\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for needle in ["zone sg1-a down", "region sg1 down", "region sg1 back", "slots in use after every call ended: 0 (ok)", "demo passed"] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
    // calls left from every zone at some point, and the Primary's failures failed over
    let by_zone = text.lines().find(|l| l.contains("calls by egress zone")).unwrap_or("");
    for z in ["sg1-a", "sg1-b", "hk1-a", "hk1-b"] {
        assert!(by_zone.contains(z), "{by_zone}");
    }
    assert!(!text.contains("Auto Fail-over (HQ PBX 503 -> DR PBX): 0 calls"), "{text}");
}

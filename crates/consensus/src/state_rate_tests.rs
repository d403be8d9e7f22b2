//! A trunk's rate pool in the ledger (`hatrunk_core::cps`): shares within the calls per second,
//! and none left with a node that lost its lease or restarted.

use super::*;
use hatrunk_core::cps::rate_key;

fn req(command: Command) -> Request {
    Request { client: 0, serial: 0, command }
}

fn rated(cps: &str) -> Trunk {
    hatrunk_core::trunk::parse_trunk(&format!(
        "id = \"a\"\nnumbers = [\"100\"]\nmax_concurrent_calls = 50\n{cps}\n[primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\n"
    ))
    .expect("trunk")
}

fn reserve(node: &str, want: u32) -> Command {
    Command::ReserveAt { trunk: rate_key("a"), node: node.into(), want, epoch: 1 }
}

#[test]
fn tokens_are_granted_within_the_calls_per_second() {
    let mut s = ClusterState::default();
    s.apply(&req(Command::PutTrunk(Box::new(rated("max_calls_per_second = 10")))));
    for n in ["n1", "n2"] {
        s.apply(&req(Command::Boot { node: n.into() }));
    }
    assert_eq!(s.apply(&req(reserve("n1", 7))), CommandResult::Reserved(7));
    assert_eq!(s.apply(&req(reserve("n2", 7))), CommandResult::Reserved(3), "10 per second across both");
    assert_eq!(s.held("a"), 0, "tokens are not call slots");
    assert_eq!(s.limit_of(&rate_key("a")), Some(10));
    s.apply(&req(Command::PutTrunk(Box::new(rated("")))));
    assert_eq!(s.limit_of(&rate_key("a")), Some(0), "no limit set: no tokens (the call path asks for none)");
    assert_eq!(s.apply(&req(reserve("n1", 1))), CommandResult::Reserved(0));
    assert_eq!(s.limit_of(&rate_key("b")), None);
}

#[test]
fn a_lapsed_or_restarted_node_keeps_its_call_slots_but_no_tokens() {
    let mut s = ClusterState::default();
    s.apply(&req(Command::PutTrunk(Box::new(rated("max_calls_per_second = 10")))));
    s.apply(&req(Command::Boot { node: "n1".into() }));
    s.apply(&req(Command::ReserveAt { trunk: "a".into(), node: "n1".into(), want: 5, epoch: 1 }));
    s.apply(&req(reserve("n1", 6)));
    // it reports 4 slots and 6 tokens in use, then goes silent
    let keep = vec![("a".to_string(), 4), (rate_key("a"), 6)];
    s.apply(&req(Command::Renew { node: "n1".into(), epoch: 1, keep }));
    let seq = s.leases.get("n1").map(|r| r.seq).expect("lease");
    s.apply(&req(Command::Lapse { node: "n1".into(), seq }));
    assert_eq!(s.shares.share("a", "n1"), 4, "its calls' slots stay");
    assert_eq!(s.shares.share(&rate_key("a"), "n1"), 0, "its tokens went back a second after its last call");
    // a restart after new grants: the calls stay inherited, the tokens do not
    s.apply(&req(Command::Renew { node: "n1".into(), epoch: 1, keep: vec![("a".to_string(), 4)] }));
    s.apply(&req(reserve("n1", 3)));
    match s.apply(&req(Command::Boot { node: "n1".into() })) {
        CommandResult::Booted { held, .. } => assert_eq!(held, vec![("a".to_string(), 4)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.shares.share(&rate_key("a"), "n1"), 0);
}

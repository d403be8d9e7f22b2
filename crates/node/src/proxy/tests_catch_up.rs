//! Forwarded INVITEs for a number the egress does not know (`catch_up.rs`), driven by hand: the
//! egress behind waits until it has applied as far as the ingress had; the egress as far or
//! further answers 404 at once; the wait is bounded in time and in number.

use std::sync::Arc;

use super::tests::{engine_behind, from, sent_to, Lag, CARRIER, PRIMARY};
use super::tests_egress::{invite, of_call, two_t_trunk, view, NODE2};
use super::{Action, Engine};

/// Call `n` forwarded by n2, whose state had come to `applied` (none: a member of the release before).
fn fwd(n: u32, applied: Option<u64>) -> String {
    let value = super::forward_sig::ingress_value(None, &format!("call-{n}"), "n2", applied);
    invite(n).replace("Max-Forwards: 70", &format!("Max-Forwards: 69\r\nX-Hatrunk-Ingress: {value}"))
}

fn codes(a: &[Action], n: u32) -> Vec<u16> {
    of_call(a, NODE2, n).iter().filter_map(|m| m.code()).collect()
}

fn egress(lag: &Arc<Lag>) -> Engine {
    engine_behind(&two_t_trunk(), Arc::new(view(true)), None, None, 1, lag.clone())
}

/// Tick through the polls until call `n` gets a final answer (or 3 s pass): (its codes, when).
fn until_final(e: &mut Engine, n: u32, mut t: u64) -> (Vec<u16>, u64) {
    loop {
        t = e.next_deadline().expect("a poll is armed").max(t);
        e.on_tick(t);
        // (a 487 sent meanwhile is retransmitted: no ACK comes for it here)
        let got = codes(&e.drain(), n);
        if !got.is_empty() || t >= 3_000 {
            return (got, t);
        }
    }
}

/// The egress behind waits for the trunk instead of a 404 the carrier would take as the number's
/// answer; a CANCEL of a waiting one gets its 487; one whose state never comes that far gets 503
/// after the wait (the ingress moves it on).
#[tokio::test]
async fn a_forward_for_a_trunk_not_applied_here_yet_waits_for_it() {
    let lag = Lag::at(true, 5);
    let mut e = egress(&lag);
    // a carrier's INVITE for an unknown number is still 404 at once: only forwards wait
    e.on_message(from(CARRIER, &invite(9)), 0);
    assert_eq!(sent_to(&e.drain(), CARRIER).iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![100, 404]);
    e.on_message(from(NODE2, &fwd(5, Some(10))), 0);
    e.on_message(from(NODE2, &fwd(6, Some(10))), 0);
    let a = e.drain();
    assert_eq!((codes(&a, 5), codes(&a, 6)), (vec![100], vec![100]), "only 100s while the trunk is not here");
    assert!(sent_to(&a, PRIMARY).is_empty());
    // the caller of call 6 hangs up while it waits
    let cancel = fwd(6, Some(10)).replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    e.on_message(from(NODE2, &cancel), 30);
    assert_eq!(codes(&e.drain(), 6), vec![200, 487]);
    // applied further, but not yet as far as the ingress: still waiting
    lag.set(true, 9);
    e.on_tick(100);
    assert!(e.drain().is_empty(), "still waiting");
    // the trunk arrives: call 5 goes to the PBX on the next look, without admission (the ingress holds the slot)
    lag.set(false, 10);
    let due = e.next_deadline().expect("a poll is armed");
    assert!(due <= 200, "{due}");
    e.on_tick(due);
    let a = e.drain();
    let to_pbx = sent_to(&a, PRIMARY);
    assert_eq!(to_pbx.len(), 1, "{a:?}");
    assert_eq!(to_pbx[0].header("Call-ID"), Some("call-5"));
    assert!(!a.iter().any(|x| matches!(x, Action::Admit { .. })));
    // a state that never comes as far as the ingress's: 503 once the wait is over, not before
    lag.set(true, 10);
    e.on_message(from(NODE2, &fwd(7, Some(11))), 1_000);
    assert_eq!(codes(&e.drain(), 7), vec![100]);
    let (got, t) = until_final(&mut e, 7, 1_000);
    assert_eq!(got, vec![503]);
    assert!((2_000..2_100).contains(&t), "503 after the wait ({t} ms)");
    assert!(of_call(&e.drain(), NODE2, 7).iter().all(|m| m.header("X-Hatrunk-Report").is_none()));
}

/// A number the egress does not know although it has applied all the ingress had is gone (deleted
/// since the ingress looked): 404 at once, or as soon as a waiting egress has come that
/// far. A forward from a member of the release before (no index) cannot tell: it waits, and 503.
#[tokio::test]
async fn a_forward_for_a_number_gone_is_refused_with_404() {
    let lag = Lag::at(true, 20);
    let mut e = egress(&lag);
    e.on_message(from(NODE2, &fwd(1, Some(20))), 0);
    e.on_message(from(NODE2, &fwd(2, Some(12))), 0);
    let a = e.drain();
    assert_eq!((codes(&a, 1), codes(&a, 2)), (vec![100, 404], vec![100, 404]), "at once, ahead or level");
    assert!(sent_to(&a, PRIMARY).is_empty());
    // behind when it came; the deletion is applied meanwhile
    e.on_message(from(NODE2, &fwd(3, Some(30))), 0);
    assert_eq!(codes(&e.drain(), 3), vec![100]);
    lag.set(true, 31);
    let (got, t) = until_final(&mut e, 3, 0);
    assert_eq!(got, vec![404]);
    assert!(t <= 100, "on the next look ({t} ms)");
    // the release before: no index
    e.on_message(from(NODE2, &fwd(4, None)), 500);
    assert_eq!(codes(&e.drain(), 4), vec![100]);
    let (got, t) = until_final(&mut e, 4, 500);
    assert_eq!((got, t >= 1_500), (vec![503], true), "{t}");
}

/// The trunk's batch lands between the engine's first look for the number and its reading of the
/// applied index, taking that index to the ingress's: the call is routed, not refused with 404
/// (the index is read before the number is looked up again).
#[tokio::test]
async fn a_trunk_applied_between_the_looks_is_routed_not_refused() {
    let lag = Lag::at(true, 10);
    lag.applies_on_read.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut e = egress(&lag);
    e.on_message(from(NODE2, &fwd(1, Some(10))), 0);
    let a = e.drain();
    assert_eq!(codes(&a, 1), vec![100]);
    assert_eq!(of_call(&a, PRIMARY, 1).len(), 1, "routed to the PBX: {a:?}");
}

/// At most 256 forwards wait at once; the next is refused at once with 503 and no egress report
/// (the ingress moves it on), and the waiting ones are not disturbed.
#[tokio::test]
async fn waiting_forwards_are_bounded() {
    let mut e = egress(&Lag::at(true, 0));
    for n in 100..356 {
        e.on_message(from(NODE2, &fwd(n, Some(1))), 0);
    }
    assert!(sent_to(&e.drain(), NODE2).iter().all(|m| m.code() == Some(100)), "256 wait");
    e.on_message(from(NODE2, &fwd(999, Some(1))), 1);
    let refused = of_call(&e.drain(), NODE2, 999);
    assert_eq!(refused.iter().filter_map(|m| m.code()).collect::<Vec<_>>(), vec![100, 503]);
    assert!(refused[1].header("X-Hatrunk-Report").is_none(), "no egress report: the ingress moves it on");
}

//! Account rules on the wire: number rewriting, removed headers, Diversion / History-Info on a
//! failed-over call, and the trunk's session timer asked for.

use hatrunk_core::ha::HealthView;
use hatrunk_core::pool::Decision;

use super::tests::{admit_id, answer, engine_with, from, member, sent_to, CARRIER, INVITE, PRIMARY, SECONDARY};

fn trunk(extra: &str, secondary: &str) -> String {
    format!(
        "id = \"t\"\nnumbers = [\"+441000\"]\nmax_concurrent_calls = 5\nmode = \"auto-failover\"\nfailover_timeout_ms = 1000\n{extra}\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1:5060\"\nallowed_ips = [\"10.0.0.1\"]\nnumber_strip = \"+44\"\nnumber_add = \"0\"\n\
         remove_headers = [\"X-Carrier-Internal\"]\n\
         [secondary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.2:5060\"\nallowed_ips = [\"10.0.0.2\"]\n{secondary}\n"
    )
}

fn invite() -> String {
    INVITE
        .replace("sip:1000@", "sip:+441000@")
        .replace("Max-Forwards: 70", "Max-Forwards: 70\nX-Carrier-Internal: secret-route\nP-Other: kept")
}

fn start(trunk: &str) -> (super::Engine, Vec<hatrunk_sip::SipMessage>) {
    let mut e = engine_with(trunk, HealthView::single(member(1, "z", "127.0.0.1:5060")));
    e.on_message(from(CARRIER, &invite()), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    let to_primary = sent_to(&e.drain(), PRIMARY);
    (e, to_primary)
}

#[tokio::test]
async fn the_primary_gets_its_national_number_without_the_carriers_header() {
    let (_, to_primary) = start(&trunk("", ""));
    let m = &to_primary[0];
    assert_eq!(m.uri(), Some("sip:01000@10.0.0.1:5060"));
    assert_eq!(m.header("To"), Some("<sip:01000@127.0.0.1>"));
    assert_eq!(m.header("X-Carrier-Internal"), None);
    assert_eq!(m.header("P-Other"), Some("kept"));
    assert_eq!(m.header("Session-Expires"), None, "no timer unless the trunk asks");
    assert_eq!(m.header("Diversion"), None);
}

#[tokio::test]
async fn the_secondary_hears_why_with_its_own_rules() {
    let (mut e, to_primary) = start(&trunk("failover_policy = \"custom\"\nfailover_codes = [486, 503]", "diversion = \"diversion\""));
    e.on_message(from(PRIMARY, &answer(&to_primary[0], 486, "Busy Here", PRIMARY)), 50);
    let a = e.drain();
    let to_secondary = sent_to(&a, SECONDARY);
    let m = to_secondary.iter().find(|m| m.method().is_some()).expect("INVITE to the Secondary");
    // the Secondary has no number rule: the number as indexed, as before; its rules only
    assert_eq!(m.uri(), Some("sip:441000@10.0.0.2:5060"));
    assert_eq!(m.header("X-Carrier-Internal"), Some("secret-route"), "the Primary's removals are the Primary's");
    assert_eq!(m.header("Diversion"), Some("<sip:01000@10.0.0.1:5060>;reason=user-busy;counter=1;privacy=off"));
}

#[tokio::test]
async fn a_silent_primary_is_history_info_no_answer() {
    let (mut e, _) = start(&trunk("", "diversion = \"history-info\""));
    e.on_tick(1001);
    let to_secondary = sent_to(&e.drain(), SECONDARY);
    let hi = to_secondary[0].header("History-Info").expect("History-Info");
    assert_eq!(hi, "<sip:01000@10.0.0.1:5060?Reason=SIP%3Bcause%3D408>;index=1, <sip:441000@10.0.0.2:5060>;index=1.1;rc=1");
}

#[tokio::test]
async fn the_trunks_session_timer_is_asked_for_only_when_the_caller_asked_none() {
    let (_, to_primary) = start(&trunk("session_expires_s = 1800", ""));
    assert_eq!(to_primary[0].header("Session-Expires"), Some("1800"));
    let mut e = engine_with(&trunk("session_expires_s = 1800", ""), HealthView::single(member(1, "z", "127.0.0.1:5060")));
    let own = invite().replace("Max-Forwards: 70", "Max-Forwards: 70\nSession-Expires: 600;refresher=uac\nSupported: timer");
    e.on_message(from(CARRIER, &own), 0);
    let id = admit_id(&e.drain());
    e.on_admitted(id, Ok(Decision::Granted), 1);
    assert_eq!(sent_to(&e.drain(), PRIMARY)[0].header("Session-Expires"), Some("600;refresher=uac"));
}

#[tokio::test]
async fn a_call_over_the_calls_per_second_limit_gets_503_retry_after_and_its_cdr_says_so() {
    let mut e = engine_with(&trunk("max_calls_per_second = 2", ""), HealthView::single(member(1, "z", "127.0.0.1:5060")));
    e.on_message(from(CARRIER, &invite()), 0);
    let a = e.drain();
    assert!(a.iter().any(|x| matches!(x, super::Action::Admit { cps: Some(2), .. })), "the Admit carries the trunk's rate");
    e.on_admitted(admit_id(&a), Ok(Decision::RateLimited { per_second: 2 }), 1);
    let a = e.drain();
    let out = sent_to(&a, CARRIER);
    let refusal = out.iter().find(|m| m.code() == Some(503)).expect("503");
    assert_eq!(refusal.header("Retry-After"), Some("1"));
    assert!(sent_to(&a, PRIMARY).is_empty(), "nothing reaches the PBX");
    let cdr = a.iter().find_map(|x| if let super::Action::Cdr(c) = x { Some(c.clone()) } else { None }).expect("cdr");
    assert_eq!(cdr.cause, hatrunk_core::cdr::Cause::CpsLimit);
    assert!(!a.iter().any(|x| matches!(x, super::Action::Release { .. })), "no slot was taken");
}

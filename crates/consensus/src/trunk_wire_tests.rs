//! The trunk's wire form against format 2's bytes, and format 3's through bincode and JSON.

use super::*;
use crate::types::Command;

/// Format 2's trunk exactly as that release derived it (frozen).
#[derive(Serialize)]
struct TrunkV2 {
    id: String,
    numbers: Vec<String>,
    max_concurrent_calls: u32,
    mode: Mode,
    advanced_ha: AdvancedHa,
    primary_region: Option<String>,
    failover_policy: FailoverPolicy,
    failover_timeout_ms: u32,
    max_call_duration_s: u32,
    primary: AccountV2,
    secondary: Option<AccountV2>,
}

fn trunk(extra: &str) -> Trunk {
    hatrunk_core::trunk::parse_trunk(&format!(
        "id = \"acme\"\nnumbers = [\"6561230000\"]\nmax_concurrent_calls = 30\nmode = \"auto-failover\"\n{extra}\n\
         [primary]\nauth = \"ip\"\ntarget = \"sip:10.0.0.1\"\nallowed_ips = [\"10.0.0.1\"]\ncaller_id = \"+6561230000\"\n\
         [secondary]\nauth = \"digest\"\nusername = \"acme-dr\"\npassword = \"secret-secret\"\ndiversion = \"diversion\"\n"
    ))
    .expect("trunk")
}

fn plain() -> Trunk {
    let mut t = trunk("");
    t.secondary.as_mut().expect("secondary").diversion = Default::default();
    t
}

fn v2_bytes(t: &Trunk) -> Vec<u8> {
    let old = TrunkV2 {
        id: t.id.clone(),
        numbers: t.numbers.clone(),
        max_concurrent_calls: t.max_concurrent_calls,
        mode: t.mode,
        advanced_ha: t.advanced_ha,
        primary_region: t.primary_region.clone(),
        failover_policy: t.failover_policy.clone(),
        failover_timeout_ms: t.failover_timeout_ms,
        max_call_duration_s: t.max_call_duration_s,
        primary: account_v2(&t.primary),
        secondary: t.secondary.as_ref().map(account_v2),
    };
    bincode::serialize(&old).expect("v2")
}

#[test]
fn a_trunk_format_2_can_express_is_written_in_its_bytes() {
    let t = plain();
    let old = v2_bytes(&t);
    let cmd = Command::PutTrunk(Box::new(t.clone()));
    let now = bincode::serialize(&cmd).expect("encode");
    // variant index (u32) then the trunk: the same bytes a format 2 node writes and reads
    assert_eq!(&now[4..], &old[..]);
    let back: Command = bincode::deserialize(&now).expect("decode");
    assert_eq!(back, cmd);
}

#[test]
fn a_format_2_entry_reads_with_the_new_fields_at_their_defaults() {
    let t = plain();
    let mut bytes = 0u32.to_le_bytes().to_vec(); // Command::PutTrunk
    bytes.extend(v2_bytes(&t));
    let cmd: Command = bincode::deserialize(&bytes).expect("decode");
    let Command::PutTrunk(read) = cmd else { panic!("not a PutTrunk") };
    assert_eq!(*read, t);
    assert_eq!(read.session_expires_s, None);
    assert!(read.primary.to_pbx.is_empty());
}

#[test]
fn a_trunk_using_format_3_fields_round_trips_and_what_follows_stays_aligned() {
    let t = trunk("session_expires_s = 1800");
    assert!(!fits_v2(&t));
    let state: (Command, u64, String) = (Command::PutTrunk(Box::new(t.clone())), 77, "after".into());
    let bytes = bincode::serialize(&state).expect("encode");
    assert!(bytes.windows(MARK.len()).any(|w| w == MARK.as_bytes()));
    let back: (Command, u64, String) = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(back, state);
    // through the bounded codec the network uses, too
    let back: (Command, u64, String) = crate::codec::decode(&crate::codec::encode(&state).expect("enc")).expect("dec");
    assert_eq!(back, state);
}

#[test]
fn a_state_mixing_both_forms_round_trips() {
    let mut s = crate::state::ClusterState::default();
    let mut other = plain();
    other.id = "beta".into();
    other.numbers = vec!["6569990000".into()];
    s.trunks.insert("acme".into(), Arc::new(trunk("session_expires_s = 90")));
    s.trunks.insert("beta".into(), Arc::new(other));
    let back: crate::state::ClusterState = bincode::deserialize(&bincode::serialize(&s).expect("enc")).expect("dec");
    assert_eq!(back, s);
}

#[test]
fn json_shows_the_trunk_itself() {
    let cmd = Command::PutTrunk(Box::new(trunk("session_expires_s = 600")));
    let v = serde_json::to_value(&cmd).expect("json");
    assert_eq!(v["PutTrunk"]["session_expires_s"], 600);
    let back: Command = serde_json::from_value(v).expect("back");
    assert_eq!(back, cmd);
}

#[test]
fn a_damaged_format_3_trunk_is_an_error_not_a_default() {
    let mut bytes = 0u32.to_le_bytes().to_vec();
    let s = format!("{MARK}{{\"id\": 5}}");
    bytes.extend(bincode::serialize(&s).expect("s"));
    let e = bincode::deserialize::<Command>(&bytes).expect_err("refused");
    assert!(e.to_string().contains("format 3 trunk"), "{e}");
}

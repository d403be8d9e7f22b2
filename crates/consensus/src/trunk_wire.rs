//! How a trunk is written into the Raft log, snapshots and Raft RPCs (format 3, 2026-11-30).
//!
//! Format 2 wrote [`Trunk`] as plain bincode, which is not self-describing: a field added to the
//! trunk shifts every byte after it, so no release could add one. Format 3 writes a trunk that
//! format 2 can express in format 2's layout, byte for byte, and any other trunk as one string:
//! [`MARK`] and the trunk as JSON, where fields added later read as their defaults. So
//! - entries and snapshots written by format 2 (and format 1, whose trunks had the same layout)
//!   read unchanged: a trunk's first field is its id, which never starts with [`MARK`]'s NUL;
//! - a cluster upgraded one node at a time keeps working while no trunk uses a format 3 field: the
//!   nodes still on format 2 read every entry. A trunk that does use one is unreadable to them
//!   (their log read fails loudly), which is why `docs/operations.md` says to upgrade every node
//!   before applying such a trunk.
//!
//! Human-readable serialisers (JSON dumps) get the trunk's own fields.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hatrunk_core::credentials::DigestHa1;
use hatrunk_core::policy::FailoverPolicy;
use hatrunk_core::trunk::{Account, AdvancedHa, AuthMode, Mode, Transport, Trunk};
use ipnet::IpNet;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a format 3 trunk's string starts with; a trunk id cannot.
pub const MARK: &str = "\0hatrunk-trunk/3\n";

/// A format 2 account, field for field (frozen: never change it).
#[derive(Serialize, Deserialize)]
struct AccountV2 {
    label: String,
    auth: AuthMode,
    target: Option<String>,
    transport: Transport,
    allowed_ips: Vec<IpNet>,
    username: Option<String>,
    ha1: Option<DigestHa1>,
    caller_id: Option<String>,
    caller_id_in_from: bool,
    probe_interval_ms: Option<u32>,
    probe_up_after: u32,
    probe_down_after: u32,
    tls_pins: Vec<String>,
}

impl From<AccountV2> for Account {
    fn from(a: AccountV2) -> Account {
        Account {
            label: a.label,
            auth: a.auth,
            target: a.target,
            transport: a.transport,
            allowed_ips: a.allowed_ips,
            username: a.username,
            ha1: a.ha1,
            caller_id: a.caller_id,
            caller_id_in_from: a.caller_id_in_from,
            probe_interval_ms: a.probe_interval_ms,
            probe_up_after: a.probe_up_after,
            probe_down_after: a.probe_down_after,
            tls_pins: a.tls_pins,
            to_pbx: Default::default(),
            to_carrier: Default::default(),
            remove_headers: Vec::new(),
            diversion: Default::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn account_v2(a: &Account) -> AccountV2 {
    AccountV2 {
        label: a.label.clone(),
        auth: a.auth,
        target: a.target.clone(),
        transport: a.transport,
        allowed_ips: a.allowed_ips.clone(),
        username: a.username.clone(),
        ha1: a.ha1.clone(),
        caller_id: a.caller_id.clone(),
        caller_id_in_from: a.caller_id_in_from,
        probe_interval_ms: a.probe_interval_ms,
        probe_up_after: a.probe_up_after,
        probe_down_after: a.probe_down_after,
        tls_pins: a.tls_pins.clone(),
    }
}

/// Format 2 can express `t`: reading its format 2 layout back gives `t` again.
fn fits_v2(t: &Trunk) -> bool {
    let back = |a: &Account| Account::from(account_v2(a)) == *a;
    t.session_expires_s.is_none() && t.max_calls_per_second.is_none() && back(&t.primary) && t.secondary.as_ref().is_none_or(back)
}

/// Format 2's trunk layout has this many fields (a bincode struct is a tuple of its fields).
const V2_FIELDS: usize = 11;

/// Write `t` as format 2's layout when it fits, else as [`MARK`] + JSON.
pub fn serialize<S: Serializer>(t: &Trunk, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        return t.serialize(s);
    }
    if !fits_v2(t) {
        let json = serde_json::to_string(t).map_err(serde::ser::Error::custom)?;
        let mut tup = s.serialize_tuple(1)?;
        tup.serialize_element(&format!("{MARK}{json}"))?;
        return tup.end();
    }
    let mut tup = s.serialize_tuple(V2_FIELDS)?;
    tup.serialize_element(&t.id)?;
    tup.serialize_element(&t.numbers)?;
    tup.serialize_element(&t.max_concurrent_calls)?;
    tup.serialize_element(&t.mode)?;
    tup.serialize_element(&t.advanced_ha)?;
    tup.serialize_element(&t.primary_region)?;
    tup.serialize_element(&t.failover_policy)?;
    tup.serialize_element(&t.failover_timeout_ms)?;
    tup.serialize_element(&t.max_call_duration_s)?;
    tup.serialize_element(&account_v2(&t.primary))?;
    tup.serialize_element(&t.secondary.as_ref().map(account_v2))?;
    tup.end()
}

struct TrunkVisitor;

impl<'de> Visitor<'de> for TrunkVisitor {
    type Value = Trunk;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a trunk (format 2 layout or format 3 JSON)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Trunk, A::Error> {
        let missing = |what: &str| de::Error::custom(format!("trunk: {what} missing"));
        let first: String = seq.next_element()?.ok_or_else(|| missing("id"))?;
        if let Some(json) = first.strip_prefix(MARK) {
            return serde_json::from_str(json).map_err(|e| de::Error::custom(format!("format 3 trunk: {e}")));
        }
        macro_rules! next {
            ($what:literal) => {
                seq.next_element()?.ok_or_else(|| missing($what))?
            };
        }
        let numbers: Vec<String> = next!("numbers");
        let max_concurrent_calls: u32 = next!("max_concurrent_calls");
        let mode: Mode = next!("mode");
        let advanced_ha: AdvancedHa = next!("advanced_ha");
        let primary_region: Option<String> = next!("primary_region");
        let failover_policy: FailoverPolicy = next!("failover_policy");
        let failover_timeout_ms: u32 = next!("failover_timeout_ms");
        let max_call_duration_s: u32 = next!("max_call_duration_s");
        let primary: AccountV2 = next!("primary");
        let secondary: Option<AccountV2> = next!("secondary");
        Ok(Trunk {
            id: first,
            numbers,
            max_concurrent_calls,
            mode,
            advanced_ha,
            primary_region,
            failover_policy,
            failover_timeout_ms,
            max_call_duration_s,
            primary: primary.into(),
            secondary: secondary.map(Account::from),
            session_expires_s: None,
            max_calls_per_second: None,
        })
    }
}

/// Read a trunk written by [`serialize`] (or by format 1 or 2).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Trunk, D::Error> {
    if d.is_human_readable() {
        return Trunk::deserialize(d);
    }
    // bincode reads a tuple's elements on demand: a format 3 trunk stops after its one string
    d.deserialize_tuple(V2_FIELDS, TrunkVisitor)
}

/// A trunk in its wire form, for the containers below.
struct Wire<T>(T);

impl<T: std::ops::Deref<Target = Trunk>> Serialize for Wire<&T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, s)
    }
}

impl<'de> Deserialize<'de> for Wire<Trunk> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Wire)
    }
}

/// `#[serde(with)]` for a command's `Box<Trunk>`.
pub mod boxed {
    use super::*;

    #[allow(clippy::borrowed_box)] // serde(with) hands the field as it is
    pub fn serialize<S: Serializer>(t: &Box<Trunk>, s: S) -> Result<S::Ok, S::Error> {
        super::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<Trunk>, D::Error> {
        super::deserialize(d).map(Box::new)
    }
}

/// `#[serde(with)]` for the state's trunks by id.
pub mod map {
    use super::*;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Arc<Trunk>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, Wire(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Arc<Trunk>>, D::Error> {
        let m: BTreeMap<String, Wire<Trunk>> = BTreeMap::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, Arc::new(v.0))).collect())
    }
}

#[cfg(test)]
#[path = "trunk_wire_tests.rs"]
mod tests;

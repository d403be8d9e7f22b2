//! The trunk model and its file format (PRODUCT.md "Trunk file"), with validation that refuses a
//! wrong file whole and names the field.
//!
//! [`TrunkFile`] is what an operator writes; [`Trunk`] is what is stored and routed on. [`Trunk`]
//! travels through the Raft log in the consensus crate's `trunk_wire` form: format 2's bincode
//! layout while it fits, else JSON, where the fields added since format 2 carry `#[serde(default)]`
//! so an older trunk reads. No field may be skipped when serialising (no `skip_serializing_if`). Enumerated
//! fields are read as strings and checked here, so an unknown value is reported with its field name
//! rather than as a bare serde variant error.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::credentials::DigestHa1;
use crate::error::CoreError;
use crate::policy::FailoverPolicy;
use crate::rewrite::{parse_remove_headers, Diversion, NumberRule, SESSION_EXPIRES_RANGE};

/// How a trunk's inbound calls are spread over its two accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    OnlyPrimary,
    LoadBalancing,
    AutoFailover,
}

/// Which nodes deliver a trunk's calls (PRODUCT.md "Advanced HA").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdvancedHa {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "2t")]
    TwoT,
    #[serde(rename = "4t")]
    FourT,
    #[serde(rename = "2t+4t")]
    TwoTFourT,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Ip,
    Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Which of a trunk's two accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Secondary,
}

/// Where an IP account's calls go: `sip:HOST[:PORT]` or `sips:HOST[:PORT]`; HOST an address or a
/// name resolved by RFC 3263 (SRV when no port is given, else A/AAAA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipTarget {
    pub host: String,
    /// The port given, else 5060 (5061 for `sips:`).
    pub port: u16,
    pub port_given: bool,
    pub sips: bool,
}

impl SipTarget {
    /// The host is a name to resolve, not an address.
    pub fn is_name(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }
}

/// One SIP account (Primary or Secondary), validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub label: String,
    pub auth: AuthMode,
    pub target: Option<String>,
    pub transport: Transport,
    pub allowed_ips: Vec<IpNet>,
    pub username: Option<String>,
    /// Digest credentials; never shown (see [`Trunk::redacted`]).
    pub ha1: Option<DigestHa1>,
    pub caller_id: Option<String>,
    /// Put the Primary's caller ID in the From user of outbound calls too, not only in P-Asserted-Identity.
    #[serde(default)]
    pub caller_id_in_from: bool,
    pub probe_interval_ms: Option<u32>,
    pub probe_up_after: u32,
    pub probe_down_after: u32,
    /// SHA-256 fingerprints (64 lowercase hex digits) of the certificates this PBX may present
    /// over TLS. When set they replace CA verification for this account: a PBX with a self-signed
    /// certificate is trusted by its fingerprint and by nothing else.
    #[serde(default)]
    pub tls_pins: Vec<String>,
    // Fields below came with format 3 (2026-11-30).
    /// The called number toward this account (Request-URI and To user).
    #[serde(default)]
    pub to_pbx: NumberRule,
    /// The called number of this account's outbound calls toward the carrier.
    #[serde(default)]
    pub to_carrier: NumberRule,
    /// Headers removed from the requests this account's PBX receives.
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// How a call failed over to this account says why (the Secondary's setting counts).
    #[serde(default)]
    pub diversion: Diversion,
    /// Host names in `allowed_ips`: their addresses (A/AAAA, kept resolved by the node) are allowed too.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Account {
    /// The parsed delivery target of an IP account.
    pub fn sip_target(&self) -> Option<SipTarget> {
        self.target.as_deref().and_then(|t| parse_sip_target(t).ok())
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed_ips.iter().any(|n| n.contains(&ip))
    }
}

/// A validated trunk, as stored and routed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunk {
    pub id: String,
    pub numbers: Vec<String>,
    pub max_concurrent_calls: u32,
    pub mode: Mode,
    pub advanced_ha: AdvancedHa,
    /// 4T / 2T+4T: the region calls prefer while it is up (default: the region whose name sorts first).
    pub primary_region: Option<String>,
    pub failover_policy: FailoverPolicy,
    pub failover_timeout_ms: u32,
    pub max_call_duration_s: u32,
    pub primary: Account,
    pub secondary: Option<Account>,
    // Fields below came with format 3 (2026-11-30).
    /// RFC 4028 session interval (seconds) asked for when the caller asks for none.
    #[serde(default)]
    pub session_expires_s: Option<u32>,
    /// Calls admitted per second across the cluster at most (`cps`).
    #[serde(default)]
    pub max_calls_per_second: Option<u32>,
}

impl Trunk {
    pub fn account(&self, role: Role) -> Option<&Account> {
        match role {
            Role::Primary => Some(&self.primary),
            Role::Secondary => self.secondary.as_ref(),
        }
    }

    /// The trunk as the file format shows it (`trunk get -o json`): secrets removed, `password_set`
    /// saying whether a Digest account has one, the policy spelled as in the file.
    pub fn redacted(&self) -> serde_json::Value {
        let account = |a: &Account| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("ha1");
                if let Some(hosts) = o.remove("allowed_hosts").and_then(|h| h.as_array().cloned()) {
                    if let Some(ips) = o.get_mut("allowed_ips").and_then(|v| v.as_array_mut()) {
                        ips.extend(hosts);
                    }
                }
                for (rule, strip, add) in
                    [("to_pbx", "number_strip", "number_add"), ("to_carrier", "outbound_number_strip", "outbound_number_add")]
                {
                    if let Some(r) = o.remove(rule) {
                        o.insert(strip.into(), r["strip"].clone());
                        o.insert(add.into(), r["add"].clone());
                    }
                }
                if o.get("remove_headers").is_some_and(|h| h.as_array().is_some_and(|a| a.is_empty())) {
                    o.remove("remove_headers");
                }
                if o.get("diversion").is_some_and(|d| d == "none") {
                    o.remove("diversion");
                }
                o.retain(|_, v| !v.is_null());
                if a.auth == AuthMode::Digest {
                    o.insert("password_set".into(), serde_json::Value::Bool(a.ha1.is_some()));
                }
            }
            v
        };
        let mut v = serde_json::json!({
            "id": self.id,
            "numbers": self.numbers,
            "max_concurrent_calls": self.max_concurrent_calls,
            "mode": self.mode,
            "advanced_ha": self.advanced_ha,
            "failover_policy": self.failover_policy.name(),
            "failover_timeout_ms": self.failover_timeout_ms,
            "max_call_duration_s": self.max_call_duration_s,
            "primary": account(&self.primary),
        });
        if let Some(r) = &self.primary_region {
            v["primary_region"] = serde_json::json!(r);
        }
        if let Some(s) = self.session_expires_s {
            v["session_expires_s"] = serde_json::json!(s);
        }
        if let Some(r) = self.max_calls_per_second {
            v["max_calls_per_second"] = serde_json::json!(r);
        }
        if let FailoverPolicy::Custom(codes) = &self.failover_policy {
            v["failover_codes"] = serde_json::json!(codes);
        }
        if let Some(s) = &self.secondary {
            v["secondary"] = account(s);
        }
        v
    }
}

/// The trunk file as written by an operator (PRODUCT.md), before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkFile {
    pub id: Option<String>,
    pub numbers: Option<Vec<String>>,
    pub max_concurrent_calls: Option<i64>,
    pub mode: Option<String>,
    pub advanced_ha: Option<String>,
    pub primary_region: Option<String>,
    pub failover_policy: Option<String>,
    pub failover_codes: Option<Vec<i64>>,
    pub failover_timeout_ms: Option<i64>,
    /// Safety timer for calls whose BYE never comes (seconds; default 4 hours).
    pub max_call_duration_s: Option<i64>,
    /// RFC 4028 session interval asked for when the caller asks for none (seconds, 90-86400).
    pub session_expires_s: Option<i64>,
    /// Calls admitted per second across the cluster at most (1-100000).
    pub max_calls_per_second: Option<i64>,
    pub primary: Option<AccountFile>,
    pub secondary: Option<AccountFile>,
    /// The revision the file was read at (`trunk get` shows it): the write applies only if the
    /// trunk is still at it. Not part of the trunk.
    pub revision: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    pub label: Option<String>,
    pub auth: Option<String>,
    pub target: Option<String>,
    pub transport: Option<String>,
    pub allowed_ips: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub caller_id: Option<String>,
    pub caller_id_in_from: Option<bool>,
    pub probe_interval_ms: Option<i64>,
    pub probe_up_after: Option<i64>,
    pub probe_down_after: Option<i64>,
    pub tls_pin: Option<Vec<String>>,
    /// The called number toward the PBX: this prefix removed, then `number_add` put in front.
    pub number_strip: Option<String>,
    pub number_add: Option<String>,
    /// The same for the numbers this account's PBX calls out to (toward the carrier).
    pub outbound_number_strip: Option<String>,
    pub outbound_number_add: Option<String>,
    pub remove_headers: Option<Vec<String>>,
    pub diversion: Option<String>,
}

pub const DEFAULT_FAILOVER_TIMEOUT_MS: u32 = 2500;
pub const DEFAULT_MAX_CALL_DURATION_S: u32 = 4 * 3600;
pub const MAX_LIMIT: i64 = 1_000_000;

impl TrunkFile {
    pub fn from_toml(text: &str) -> Result<Self, CoreError> {
        toml::from_str(text).map_err(|e| CoreError::Syntax(e.to_string().trim().replace('\n', " ")))
    }

    /// Check every field and build the trunk. The first wrong field is reported; nothing is partial.
    pub fn validate(&self) -> Result<Trunk, CoreError> {
        let id = self.id.as_deref().ok_or_else(|| CoreError::field("id", "missing"))?;
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(CoreError::field("id", "must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        let numbers = self.numbers.as_ref().ok_or_else(|| CoreError::field("numbers", "missing"))?;
        if numbers.is_empty() {
            return Err(CoreError::field("numbers", "a trunk needs at least one number"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in numbers.iter().enumerate() {
            let field = format!("numbers[{i}]");
            if !is_number(n) {
                return Err(CoreError::field(field, format!("{n:?} is not a phone number (digits, optional leading '+', 3-20 digits)")));
            }
            if !seen.insert(normalize_number(n)) {
                return Err(CoreError::field(field, format!("{n} is listed twice")));
            }
        }
        let limit = self.max_concurrent_calls.ok_or_else(|| CoreError::field("max_concurrent_calls", "missing"))?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(CoreError::field("max_concurrent_calls", format!("must be between 1 and {MAX_LIMIT}, got {limit}")));
        }
        let mode = match self.mode.as_deref().unwrap_or("only-primary") {
            "only-primary" => Mode::OnlyPrimary,
            "load-balancing" => Mode::LoadBalancing,
            "auto-failover" => Mode::AutoFailover,
            other => {
                return Err(CoreError::field(
                    "mode",
                    format!("unknown mode {other:?}; expected only-primary, load-balancing or auto-failover"),
                ))
            }
        };
        let advanced_ha = match self.advanced_ha.as_deref().unwrap_or("none") {
            "none" => AdvancedHa::None,
            "2t" => AdvancedHa::TwoT,
            "4t" => AdvancedHa::FourT,
            "2t+4t" => AdvancedHa::TwoTFourT,
            other => return Err(CoreError::field("advanced_ha", format!("unknown value {other:?}; expected none, 2t, 4t or 2t+4t"))),
        };
        let primary_region = match self.primary_region.as_deref() {
            None => None,
            Some(r) if !r.is_empty() && r.len() <= 64 && r.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
                Some(r.to_string())
            }
            Some(r) => return Err(CoreError::field("primary_region", format!("{r:?} is not a region name (letters, digits, - _ .)"))),
        };
        let failover_policy = self.policy()?;
        let failover_timeout_ms = match self.failover_timeout_ms {
            None => DEFAULT_FAILOVER_TIMEOUT_MS,
            Some(t) if (100..=60_000).contains(&t) => t as u32,
            Some(t) => return Err(CoreError::field("failover_timeout_ms", format!("must be between 100 and 60000, got {t}"))),
        };
        let max_call_duration_s = match self.max_call_duration_s {
            None => DEFAULT_MAX_CALL_DURATION_S,
            Some(t) if (10..=7 * 86_400).contains(&t) => t as u32,
            Some(t) => return Err(CoreError::field("max_call_duration_s", format!("must be between 10 and 604800, got {t}"))),
        };
        let session_expires_s = match self.session_expires_s {
            None => None,
            Some(t) if SESSION_EXPIRES_RANGE.contains(&t) => Some(t as u32),
            Some(t) => return Err(CoreError::field("session_expires_s", format!("must be between 90 and 86400, got {t}"))),
        };
        let max_calls_per_second = match self.max_calls_per_second {
            None => None,
            Some(r) if (1..=100_000).contains(&r) => Some(r as u32),
            Some(r) => return Err(CoreError::field("max_calls_per_second", format!("must be between 1 and 100000, got {r}"))),
        };
        let primary = self.primary.as_ref().ok_or_else(|| CoreError::field("primary", "missing"))?.validate("primary")?;
        let secondary = self.secondary.as_ref().map(|s| s.validate("secondary")).transpose()?;
        if secondary.is_none() && mode != Mode::OnlyPrimary {
            return Err(CoreError::field("secondary", format!("mode {:?} needs a secondary account", self.mode.as_deref().unwrap_or(""))));
        }
        if let Some(s) = &secondary {
            if s.caller_id.is_some() {
                return Err(CoreError::field("secondary.caller_id", "the Secondary uses the Primary's caller ID; set it on [primary]"));
            }
        }
        Ok(Trunk {
            id: id.to_string(),
            numbers: numbers.iter().map(|n| normalize_number(n)).collect(),
            max_concurrent_calls: limit as u32,
            mode,
            advanced_ha,
            primary_region,
            failover_policy,
            failover_timeout_ms,
            max_call_duration_s,
            primary,
            secondary,
            session_expires_s,
            max_calls_per_second,
        })
    }

    fn policy(&self) -> Result<FailoverPolicy, CoreError> {
        let name = self.failover_policy.as_deref().unwrap_or("current");
        let policy = match name {
            "current" => FailoverPolicy::Current,
            "legacy" => FailoverPolicy::Legacy,
            "custom" => {
                let codes = self
                    .failover_codes
                    .as_ref()
                    .ok_or_else(|| CoreError::field("failover_codes", "required when failover_policy = \"custom\""))?;
                if codes.is_empty() {
                    return Err(CoreError::field("failover_codes", "needs at least one code"));
                }
                let mut out = Vec::new();
                for (i, c) in codes.iter().enumerate() {
                    if !(300..=699).contains(c) {
                        return Err(CoreError::field(format!("failover_codes[{i}]"), format!("{c} is not a final failure code (300-699)")));
                    }
                    out.push(*c as u16);
                }
                FailoverPolicy::Custom(out)
            }
            other => {
                return Err(CoreError::field("failover_policy", format!("unknown policy {other:?}; expected current, legacy or custom")))
            }
        };
        if name != "custom" && self.failover_codes.is_some() {
            return Err(CoreError::field("failover_codes", "only allowed with failover_policy = \"custom\""));
        }
        Ok(policy)
    }
}

impl AccountFile {
    fn validate(&self, at: &str) -> Result<Account, CoreError> {
        let f = |name: &str| format!("{at}.{name}");
        let label = self.label.clone().unwrap_or_else(|| if at == "primary" { "Primary".into() } else { "Secondary".into() });
        if label.is_empty() || label.len() > 64 {
            return Err(CoreError::field(f("label"), "must be 1-64 characters"));
        }
        let auth = match self.auth.as_deref() {
            Some("ip") => AuthMode::Ip,
            Some("digest") => AuthMode::Digest,
            Some(other) => return Err(CoreError::field(f("auth"), format!("unknown auth mode {other:?}; expected ip or digest"))),
            None => return Err(CoreError::field(f("auth"), "missing (ip or digest)")),
        };
        let transport = match self.transport.as_deref().unwrap_or("udp") {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(CoreError::field(f("transport"), format!("unknown transport {other:?}; expected udp, tcp or tls"))),
        };
        let (mut allowed_ips, mut allowed_hosts) = (Vec::new(), Vec::new());
        for (i, s) in self.allowed_ips.iter().flatten().enumerate() {
            match parse_cidr(s) {
                Ok(net) => allowed_ips.push(net),
                Err(_) if is_host_name(s) => allowed_hosts.push(s.to_ascii_lowercase()),
                Err(r) => return Err(CoreError::field(format!("{at}.allowed_ips[{i}]"), format!("{r}, nor a host name"))),
            }
        }
        let (mut target, mut username, mut ha1) = (None, None, None);
        match auth {
            AuthMode::Ip => {
                let t =
                    self.target.as_deref().ok_or_else(|| CoreError::field(f("target"), "an ip account needs a target (sip:HOST:PORT)"))?;
                let parsed = parse_sip_target(t).map_err(|r| CoreError::field(f("target"), r))?;
                if parsed.sips && transport != Transport::Tls {
                    return Err(CoreError::field(f("target"), "a sips: target is reached over TLS only; set transport = \"tls\""));
                }
                if allowed_ips.is_empty() && allowed_hosts.is_empty() {
                    return Err(CoreError::field(f("allowed_ips"), "an ip account needs at least one allowed address"));
                }
                if self.username.is_some() || self.password.is_some() {
                    return Err(CoreError::field(f("username"), "only digest accounts have credentials"));
                }
                target = Some(t.to_string());
            }
            AuthMode::Digest => {
                if self.target.is_some() {
                    return Err(CoreError::field(f("target"), "a digest account is reached at its registered contact; remove target"));
                }
                let u = self.username.as_deref().ok_or_else(|| CoreError::field(f("username"), "a digest account needs a username"))?;
                if u.is_empty() || u.len() > 64 || !u.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) {
                    return Err(CoreError::field(f("username"), "must be 1-64 characters of letters, digits, '-', '_', '.' or '+'"));
                }
                let p = self.password.as_deref().ok_or_else(|| CoreError::field(f("password"), "a digest account needs a password"))?;
                if p.len() < 8 || p.len() > 128 {
                    return Err(CoreError::field(f("password"), "must be 8-128 characters"));
                }
                username = Some(u.to_string());
                ha1 = Some(DigestHa1::derive(u, p));
            }
        }
        if let Some(c) = &self.caller_id {
            if !is_number(c) {
                return Err(CoreError::field(f("caller_id"), format!("{c:?} is not a phone number")));
            }
        }
        let probe_interval_ms = match self.probe_interval_ms {
            None => None,
            Some(v) if (200..=3_600_000).contains(&v) => Some(v as u32),
            Some(v) => return Err(CoreError::field(f("probe_interval_ms"), format!("must be between 200 and 3600000, got {v}"))),
        };
        let threshold = |v: Option<i64>, name: &str, default: u32| match v {
            None => Ok(default),
            Some(v) if (1..=100).contains(&v) => Ok(v as u32),
            Some(v) => Err(CoreError::field(f(name), format!("must be between 1 and 100, got {v}"))),
        };
        let mut tls_pins = Vec::new();
        for (i, pin) in self.tls_pin.iter().flatten().enumerate() {
            if transport != Transport::Tls || auth != AuthMode::Ip {
                return Err(CoreError::field(f("tls_pin"), "only for an ip account with transport = \"tls\""));
            }
            tls_pins.push(parse_pin(pin).map_err(|r| CoreError::field(format!("{at}.tls_pin[{i}]"), r))?);
        }
        if self.tls_pin.as_ref().is_some_and(|p| p.is_empty() || p.len() > 8) {
            return Err(CoreError::field(f("tls_pin"), "1 to 8 fingerprints (the current certificate and its successors)"));
        }
        let to_pbx = NumberRule::parse(self.number_strip.as_deref(), self.number_add.as_deref(), f, ("number_strip", "number_add"))?;
        let to_carrier = NumberRule::parse(
            self.outbound_number_strip.as_deref(),
            self.outbound_number_add.as_deref(),
            f,
            ("outbound_number_strip", "outbound_number_add"),
        )?;
        Ok(Account {
            to_pbx,
            to_carrier,
            remove_headers: parse_remove_headers(self.remove_headers.as_deref(), at)?,
            diversion: Diversion::parse(self.diversion.as_deref(), f("diversion"))?,
            allowed_hosts,
            tls_pins,
            label,
            auth,
            target,
            transport,
            allowed_ips,
            username,
            ha1,
            caller_id: self.caller_id.clone(),
            caller_id_in_from: self.caller_id_in_from.unwrap_or(false),
            probe_interval_ms,
            probe_up_after: threshold(self.probe_up_after, "probe_up_after", 2)?,
            probe_down_after: threshold(self.probe_down_after, "probe_down_after", 3)?,
        })
    }
}

/// A certificate fingerprint as `openssl x509 -noout -fingerprint -sha256` prints it (with or
/// without `sha256:` / `SHA256 Fingerprint=` in front, colons optional), as 64 lowercase hex digits.
fn parse_pin(pin: &str) -> Result<String, String> {
    let t = pin.trim();
    let t = t.split_once('=').map_or(t, |(_, v)| v).trim();
    let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{pin:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"));
    }
    Ok(hex)
}

/// Parse and validate a trunk file in one step.
pub fn parse_trunk(text: &str) -> Result<Trunk, CoreError> {
    TrunkFile::from_toml(text)?.validate()
}

/// A trunk file and the revision it names, if any (0: the trunk must not exist yet).
pub fn parse_trunk_at(text: &str) -> Result<(Trunk, Option<u64>), CoreError> {
    let f = TrunkFile::from_toml(text)?;
    let revision = match f.revision {
        None => None,
        Some(r) => Some(u64::try_from(r).map_err(|_| CoreError::field("revision", format!("must be 0 or more, got {r}")))?),
    };
    Ok((f.validate()?, revision))
}

/// Reject a trunk that claims a number another trunk owns. `owner_of` looks a number up.
pub fn check_numbers_free<'a>(trunk: &Trunk, owner_of: impl Fn(&str) -> Option<&'a str>) -> Result<(), CoreError> {
    for n in &trunk.numbers {
        if let Some(owner) = owner_of(n) {
            if owner != trunk.id {
                return Err(CoreError::NumberTaken { number: n.clone(), owner: owner.to_string() });
            }
        }
    }
    Ok(())
}

/// A number as it is indexed: digits only (a leading '+' is dropped).
pub fn normalize_number(n: &str) -> String {
    n.trim_start_matches('+').to_string()
}

fn is_number(n: &str) -> bool {
    let d = n.strip_prefix('+').unwrap_or(n);
    (3..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
}

/// A fully qualified DNS host name (RFC 1123 labels, at least two) whose last label is not all
/// digits, so a mistyped address such as `10.0.0.300`, or a stray word, is reported as a mistake
/// rather than looked up.
fn is_host_name(s: &str) -> bool {
    let labels: Vec<&str> = s.trim_end_matches('.').split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels.last().is_some_and(|l| l.bytes().any(|b| b.is_ascii_alphabetic()))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
}

/// Parse `sip:HOST[:PORT]` or `sips:HOST[:PORT]` (an optional `user@` and `;params` are ignored).
/// Default port 5060, 5061 for `sips:`.
pub fn parse_sip_target(s: &str) -> Result<SipTarget, String> {
    let (rest, sips) = match (s.strip_prefix("sip:"), s.strip_prefix("sips:")) {
        (Some(r), _) => (r, false),
        (None, Some(r)) => (r, true),
        _ => return Err(format!("{s:?} must start with sip: or sips:")),
    };
    let rest = rest.split(';').next().unwrap_or("");
    let hostport = rest.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{s:?}: unclosed IPv6 bracket"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
        return Err(format!("{s:?} has no valid host"));
    }
    if host.parse::<IpAddr>().is_err() && (host.contains(':') || host.starts_with(['.', '-']) || host.ends_with('-') || host.contains(".."))
    {
        return Err(format!("{s:?} has no valid host"));
    }
    let port_given = port.is_some();
    let port = match port {
        None if sips => 5061,
        None => 5060,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?} has a bad port"))?,
    };
    Ok(SipTarget { host, port, port_given, sips })
}

#[cfg(test)]
#[path = "trunk_tests.rs"]
mod tests;

//! Node configuration (`hatrunk run --config node.toml`): a serde struct whose every field has a
//! default, so `hatrunk run` with no file is a complete single node on loopback, and a `validate()`
//! whose errors name the field.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::NodeError;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub sip: SipSection,
    pub cluster: ClusterSection,
    pub http: HttpSection,
    pub upstream: UpstreamSection,
    pub cdr: CdrSection,
    pub security: SecuritySection,
    pub tls: TlsSection,
    pub admin: AdminSection,
    pub dns: DnsSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub role: String,
    pub data_dir: PathBuf,
}

impl NodeSection {
    /// The role, checked by [`NodeConfig::validate`] (a TOML string so a bad one is named as `node.role`).
    pub fn role(&self) -> hatrunk_consensus::NodeRole {
        hatrunk_consensus::NodeRole::parse(&self.role).unwrap_or_default()
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            name: "node-1".into(),
            region: "local".into(),
            zone: "local-a".into(),
            role: "sip".into(),
            data_dir: PathBuf::from("./hatrunk-data"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// `udp:HOST:PORT`, `tcp:HOST:PORT`, `tls:HOST:PORT` (one each; udp and tcp required).
    pub listen: Vec<String>,
    /// The certificate chain and key (PEM) the `tls:` listener presents; also offered as a client
    /// certificate when we open TLS to a PBX that asks for one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Extra trust anchors (PEM) for PBXs and carriers reached over TLS, added to the system's
    /// bundle (a private CA a customer's PBX certificate chains to).
    pub tls_ca: Option<PathBuf>,
    /// Stream (TCP and TLS) connections open at once, in total and from one source address.
    pub max_connections: u32,
    pub max_connections_per_source: u32,
    /// A stream connection with no traffic either way for this long is closed.
    pub tcp_idle_s: u64,
    /// The UDP socket's kernel receive buffer (SO_RCVBUF), in bytes. The kernel's default (about
    /// 200 KiB, some 200 INVITEs) overflows in a few milliseconds at thousands of calls per
    /// second, and what overflows is lost unseen. Linux caps it at `net.core.rmem_max`.
    pub udp_recv_buffer: usize,
    /// Host written in Via and Record-Route; defaults to the listen host.
    pub advertise: Option<String>,
    /// Status sent when a trunk's pool is full (with `Reason: Q.850;cause=34`).
    pub congestion_code: u16,
    pub nonce_lifetime_s: u64,
    pub min_expires_s: u32,
    pub max_expires_s: u32,
    /// A binding behind NAT (or on a stream) expires after this at most, so a PBX whose flow's
    /// node is gone registers again soon through another one.
    pub nat_max_expires_s: u32,
    /// Keep-alive (CRLF CRLF) to bindings behind NAT this often, holding their pinholes open; 0: off.
    pub nat_keepalive_s: u32,
    /// Run the SIP path (sockets, receive loops, the engine) on a thread of its own rather than on
    /// the shared runtime: a datagram then wakes no second thread on its way to the engine, which
    /// was a quarter of a call's CPU. One node's call rate is then bounded by one core. On by
    /// default (docs/decisions.md); `false` runs the SIP path on the shared runtime.
    pub own_thread: bool,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            max_connections: 4096,
            max_connections_per_source: 64,
            tcp_idle_s: 900,
            udp_recv_buffer: 8 << 20,
            advertise: None,
            congestion_code: 503,
            nonce_lifetime_s: 300,
            min_expires_s: 60,
            max_expires_s: 3600,
            nat_max_expires_s: 120,
            nat_keepalive_s: 20,
            own_thread: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Cluster and admin gRPC (one port serves both services).
    pub listen: String,
    /// The address other nodes and the CLI use to reach this one; defaults to `listen`.
    pub advertise: Option<String>,
    /// Initialise a one-voter cluster on first start. Set `false` on a node that will be added
    /// with `hatrunk cluster join`.
    pub bootstrap: bool,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Failure detector: a heartbeat to every member this often...
    pub ping_interval_ms: u64,
    /// ...and a SIP member whose SIP (OPTIONS over UDP, sent at the same interval) has not
    /// answered for this long is down (detection within about threshold + interval).
    pub failure_threshold_ms: u64,
    /// A member whose heartbeat (gRPC, over TCP) has not answered for this long is down: longer
    /// than the threshold, because one TCP segment lost twice stalls the connection for over a
    /// second across a WAN. Witnesses, which have no SIP, are judged by this alone.
    pub heartbeat_grace_ms: u64,
    /// A member that was down counts as up again after this many heartbeat answers in a row
    /// (hysteresis: a flapping link does not flip traffic with every answer). 1 turns it off.
    pub recover_after: u32,
    /// A call forwarded to another node (Advanced HA) that gets nothing back, not even 100 Trying,
    /// within this moves to the next node.
    pub forward_timeout_ms: u64,
    /// Raft log entries between snapshots (and, up to 1,000, kept behind one for slow followers).
    pub snapshot_every: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        let t = hatrunk_consensus::raft::RaftTiming::default();
        ClusterSection {
            listen: "127.0.0.1:7700".into(),
            advertise: None,
            bootstrap: true,
            heartbeat_ms: t.heartbeat_ms,
            election_min_ms: t.election_min_ms,
            election_max_ms: t.election_max_ms,
            ping_interval_ms: 200,
            failure_threshold_ms: 800,
            heartbeat_grace_ms: 3000,
            recover_after: 3,
            forward_timeout_ms: 800,
            snapshot_every: t.snapshot_every,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: "127.0.0.1:9090".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// The carrier, for outbound calls: `sip:HOST[:PORT]`, HOST an address or a name (RFC 3263).
    pub target: Option<String>,
}

/// How PBX targets given by name are resolved (RFC 3263; docs/decisions.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// DNS servers (`IP` or `IP:PORT`); empty: those of `/etc/resolv.conf`.
    pub servers: Vec<String>,
    /// How long the last answer for a name is still used while no DNS server answers (RFC 8767).
    pub stale_for_s: u64,
    /// Per query try (two tries per server).
    pub timeout_ms: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection { servers: Vec::new(), stale_for_s: 86_400, timeout_ms: 2_000 }
    }
}

impl DnsSection {
    /// The servers as socket addresses (port 53 when none is given), checked by `validate`.
    pub fn server_addrs(&self) -> Result<Vec<std::net::SocketAddr>, NodeError> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| NodeError::Config { field: format!("dns.servers[{i}]"), reason: format!("{s:?} is not IP or IP:PORT") })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrSection {
    pub path: Option<PathBuf>,
    /// Ship CDRs into PostgreSQL too (`postgres://user:password@host:port/database`); the file
    /// stays the spool while the database is away.
    pub postgres: Option<String>,
    /// Rotate the JSON-lines file once it would pass this size (bytes; 0: never by size).
    pub rotate_bytes: u64,
    /// Rotate it at the first record of each UTC day too.
    pub rotate_daily: bool,
    /// Rotated files kept (the oldest go, never one the database still needs).
    pub keep_files: usize,
}

impl Default for CdrSection {
    fn default() -> Self {
        CdrSection { path: None, postgres: None, rotate_bytes: 64 << 20, rotate_daily: true, keep_files: 14 }
    }
}

/// The cluster's own PKI (docs/security.md): with it, node-to-node gRPC is mutual TLS and only a
/// process holding a certificate from `ca` can join, vote, replicate or use the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The cluster CA (PEM).
    pub ca: Option<PathBuf>,
    /// This node's certificate chain and key (PEM), issued by `ca` (`hatrunk certs`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The DNS name every node certificate carries and every node checks on the others.
    pub server_name: String,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection { ca: None, cert: None, key: None, server_name: "hatrunk-node".into() }
    }
}

impl TlsSection {
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// A file holding the admin bearer token (first line). With it, admin calls must carry
    /// `authorization: Bearer <token>` unless they come with a cluster client certificate.
    pub token_file: Option<PathBuf>,
}

/// Defences against hostile sources (docs/security.md gives the reasons for each default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Never rate-limited or banned: carriers and PBXs by address (IP-authenticated accounts, the
    /// upstream carrier and cluster nodes are trusted without being listed).
    pub trusted: Vec<ipnet::IpNet>,
    /// New requests one untrusted source may send per `window_ms` before it is banned.
    pub max_new_requests: u32,
    pub window_ms: u64,
    pub ban_s: u64,
    /// Wrong digest credentials per source per `auth_window_s` before the source is banned.
    pub auth_failures_per_source: u32,
    /// Wrong credentials for one account (from anywhere) per window before it is locked for
    /// `lockout_s` (except from where it last authenticated).
    pub auth_failures_per_account: u32,
    pub auth_window_s: u64,
    pub lockout_s: u64,
    /// Sources and accounts tracked at most.
    pub max_tracked: usize,
    /// Server transactions in memory at most: past it, new requests get 503 with Retry-After.
    pub max_transactions: usize,
    /// Received messages waiting for the call engine past which new requests get 503 at once.
    pub shed_backlog: usize,
    /// A new request that waited longer than this (ms) since it reached the host, in the kernel's
    /// buffer or behind other messages, gets 503 once new requests have stood that late for 100 ms
    /// (`hatrunk_sip::standing`: one stall of the host refuses nothing).
    pub shed_wait_ms: u64,
}

impl Default for SecuritySection {
    fn default() -> Self {
        let g = hatrunk_core::guard::GuardLimits::default();
        SecuritySection {
            trusted: vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")],
            max_new_requests: g.max_new_requests,
            window_ms: g.window_ms,
            ban_s: g.ban_ms / 1000,
            auth_failures_per_source: g.auth_failures_per_source,
            auth_failures_per_account: g.auth_failures_per_account,
            auth_window_s: g.auth_window_ms / 1000,
            lockout_s: g.lockout_ms / 1000,
            max_tracked: g.max_sources,
            max_transactions: 200_000,
            shed_backlog: 2_000,
            shed_wait_ms: 50,
        }
    }
}

impl SecuritySection {
    pub fn limits(&self) -> hatrunk_core::guard::GuardLimits {
        hatrunk_core::guard::GuardLimits {
            window_ms: self.window_ms,
            max_new_requests: self.max_new_requests,
            ban_ms: self.ban_s * 1000,
            auth_failures_per_source: self.auth_failures_per_source,
            auth_failures_per_account: self.auth_failures_per_account,
            auth_window_ms: self.auth_window_s * 1000,
            lockout_ms: self.lockout_s * 1000,
            max_sources: self.max_tracked,
        }
    }
}

/// The checked, resolved form of the SIP listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        let c: NodeConfig = toml::from_str(text).map_err(|e| NodeError::Config { field: "(file)".into(), reason: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |field: &str, reason: String| Err(NodeError::Config { field: field.into(), reason });
        if hatrunk_consensus::NodeRole::parse(&self.node.role).is_none() {
            return bad("node.role", format!("{:?}: expected sip or witness", self.node.role));
        }
        if self.node.id == 0 {
            return bad("node.id", "must be at least 1".into());
        }
        // the name travels in SIP headers between members (`NAME;applied=N;sig=...`)
        if self.node.name.is_empty() || self.node.name.chars().any(|c| c.is_whitespace() || c.is_control() || ";=,\"<>".contains(c)) {
            return bad("node.name", format!("{:?}: must be non-empty, without spaces or any of ; = , \" < >", self.node.name));
        }
        self.dns.server_addrs()?;
        if self.dns.timeout_ms == 0 || self.dns.timeout_ms > 30_000 {
            return bad("dns.timeout_ms", format!("{}: expected 1-30000", self.dns.timeout_ms));
        }
        if self.sip_listen()?.tls.is_some() && (self.sip.tls_cert.is_none() || self.sip.tls_key.is_none()) {
            return bad("sip.tls_cert", "a tls: listener needs sip.tls_cert and sip.tls_key".into());
        }
        if !(64 << 10..=1 << 30).contains(&self.sip.udp_recv_buffer) {
            return bad("sip.udp_recv_buffer", "between 65536 and 1073741824 bytes".into());
        }
        if self.sip.max_connections == 0 || self.sip.max_connections_per_source == 0 || self.sip.tcp_idle_s == 0 {
            return bad("sip.max_connections", "max_connections, max_connections_per_source and tcp_idle_s must be at least 1".into());
        }
        let t = &self.tls;
        if t.enabled() && (t.ca.is_none() || t.cert.is_none() || t.key.is_none()) {
            return bad("tls", "cluster TLS needs all of tls.ca, tls.cert and tls.key".into());
        }
        for (field, v) in [("cluster.listen", &self.cluster.listen), ("http.listen", &self.http.listen)] {
            if v.parse::<SocketAddr>().is_err() {
                return bad(field, format!("{v:?} is not HOST:PORT"));
            }
        }
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.election_min_ms <= c.heartbeat_ms * 2 || c.election_max_ms <= c.election_min_ms {
            return bad(
                "cluster.election_min_ms",
                "need 0 < heartbeat_ms, election_min_ms > 2 x heartbeat_ms, election_max_ms > election_min_ms".into(),
            );
        }
        if c.ping_interval_ms < 10 || c.failure_threshold_ms < c.ping_interval_ms * 2 {
            return bad(
                "cluster.failure_threshold_ms",
                "need ping_interval_ms >= 10 and failure_threshold_ms >= 2 x ping_interval_ms".into(),
            );
        }
        if c.heartbeat_grace_ms < c.failure_threshold_ms || c.heartbeat_grace_ms > 60_000 {
            return bad(
                "cluster.heartbeat_grace_ms",
                format!("{}: need failure_threshold_ms ({}) <= heartbeat_grace_ms <= 60000", c.heartbeat_grace_ms, c.failure_threshold_ms),
            );
        }
        if !(1..=100).contains(&c.recover_after) {
            return bad("cluster.recover_after", format!("{} is outside 1..=100", c.recover_after));
        }
        if !(20..=1_000_000).contains(&c.snapshot_every) {
            return bad("cluster.snapshot_every", format!("{} is outside 20..=1000000", c.snapshot_every));
        }
        if !(50..=30_000).contains(&c.forward_timeout_ms) {
            return bad("cluster.forward_timeout_ms", format!("{} is outside 50..=30000", c.forward_timeout_ms));
        }
        if !(400..=699).contains(&self.sip.congestion_code) {
            return bad("sip.congestion_code", format!("{} is not a failure code", self.sip.congestion_code));
        }
        if let Some(url) = &self.cdr.postgres {
            url.parse::<tokio_postgres::Config>().map_err(|e| NodeError::Config {
                field: "cdr.postgres".into(),
                reason: format!("not a PostgreSQL connection string: {e}"),
            })?;
        }
        if self.sip.nat_max_expires_s < self.sip.min_expires_s {
            return bad("sip.nat_max_expires_s", format!("must be at least sip.min_expires_s ({})", self.sip.min_expires_s));
        }
        if let Some(t) = &self.upstream.target {
            crate::proxy::Upstream::parse(t).map_err(|r| NodeError::Config { field: "upstream.target".into(), reason: r })?;
        }
        let sec = &self.security;
        for (field, v) in [
            ("security.max_new_requests", u64::from(sec.max_new_requests)),
            ("security.window_ms", sec.window_ms),
            ("security.auth_failures_per_source", u64::from(sec.auth_failures_per_source)),
            ("security.auth_failures_per_account", u64::from(sec.auth_failures_per_account)),
            ("security.auth_window_s", sec.auth_window_s),
            ("security.max_tracked", sec.max_tracked as u64),
            ("security.max_transactions", sec.max_transactions as u64),
            ("security.shed_backlog", sec.shed_backlog as u64),
            ("security.shed_wait_ms", sec.shed_wait_ms),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if sec.shed_wait_ms > 10_000 {
            return bad("security.shed_wait_ms", "at most 10000: a request older than that has been given up on".into());
        }
        if sec.window_ms > 3_600_000 || sec.ban_s > 86_400 * 7 || sec.lockout_s > 86_400 {
            return bad("security.ban_s", "window_ms <= 1 h, ban_s <= 7 days, lockout_s <= 1 day".into());
        }
        Ok(())
    }

    pub fn sip_listen(&self) -> Result<SipListen, NodeError> {
        let (mut udp, mut tcp, mut tls) = (None, None, None);
        for (i, l) in self.sip.listen.iter().enumerate() {
            let field = format!("sip.listen[{i}]");
            let (proto, addr) = l
                .split_once(':')
                .ok_or_else(|| NodeError::Config { field: field.clone(), reason: format!("{l:?}: expected udp:HOST:PORT") })?;
            let addr: SocketAddr =
                addr.parse().map_err(|_| NodeError::Config { field: field.clone(), reason: format!("{l:?}: bad HOST:PORT") })?;
            match proto {
                "udp" => udp = Some(addr),
                "tcp" => tcp = Some(addr),
                "tls" => tls = Some(addr),
                other => return Err(NodeError::Config { field, reason: format!("unknown transport {other:?}") }),
            }
        }
        match (udp, tcp) {
            (Some(udp), Some(tcp)) => Ok(SipListen { udp, tcp, tls }),
            _ => Err(NodeError::Config { field: "sip.listen".into(), reason: "needs one udp: and one tcp: listener".into() }),
        }
    }

    pub fn cdr_path(&self) -> PathBuf {
        self.cdr.path.clone().unwrap_or_else(|| self.node.data_dir.join("cdr.jsonl"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_loopback_node() {
        let c = NodeConfig::default();
        c.validate().expect("default validates");
        let l = c.sip_listen().expect("listen");
        assert_eq!(l.udp.port(), 5060);
        assert_eq!(c.cdr_path(), PathBuf::from("./hatrunk-data/cdr.jsonl"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = NodeConfig::from_toml("[sip]\nlisten = [\"udp:1.2.3.4\"]").expect_err("bad");
        assert!(e.to_string().contains("sip.listen[0]"), "{e}");
        let e = NodeConfig::from_toml("[node]\nrole = \"boss\"").expect_err("bad");
        assert!(e.to_string().contains("node.role"), "{e}");
        for name in ["", "a b", "x;applied=9", "n=1", "a,b"] {
            let e = NodeConfig::from_toml(&format!("[node]\nname = {name:?}")).expect_err(name);
            assert!(e.to_string().contains("node.name"), "{e}");
        }
        let e = NodeConfig::from_toml("[nodes]\nid = 1").expect_err("bad");
        assert!(e.to_string().contains("nodes"), "{e}");
        // heartbeats judged faster than SIP answers would bring back the TCP false alarms
        for bad in ["heartbeat_grace_ms = 500", "heartbeat_grace_ms = 90000"] {
            let e = NodeConfig::from_toml(&format!("[cluster]\n{bad}")).expect_err(bad);
            assert!(e.to_string().contains("cluster.heartbeat_grace_ms"), "{e}");
        }
        NodeConfig::from_toml("[cluster]\nheartbeat_grace_ms = 800").expect("the threshold itself is allowed");
        for bad in ["shed_wait_ms = 0", "shed_wait_ms = 60000"] {
            let e = NodeConfig::from_toml(&format!("[security]\n{bad}")).expect_err(bad);
            assert!(e.to_string().contains("security.shed_wait_ms"), "{e}");
        }
    }
}

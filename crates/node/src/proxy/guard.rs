//! The proxy's side of [`hatrunk_core::guard`]: which sources are trusted, the per-source limit on
//! new requests, the transaction limit, and the upkeep of the ban list and of spent nonces.

use std::collections::HashMap;
use std::net::IpAddr;

use hatrunk_core::episode::Episode;
use hatrunk_core::guard::Verdict;
use hatrunk_sip::SipMessage;

use crate::metrics::Metrics;

use super::{build, Engine, Src};

/// How often the ban list and spent nonces are swept (ms).
const SWEEP_EVERY_MS: u64 = 1_000;

/// A failover storm: this many failovers of one trunk within [`STORM_WINDOW_MS`].
const STORM_FAILOVERS: u32 = 10;
const STORM_WINDOW_MS: u64 = 10_000;

/// Bursts worth a line when they start and one when they stop, instead of a line per event.
pub(super) struct Episodes {
    shedding: Episode,
    storms: HashMap<String, Episode>,
}

impl Episodes {
    /// A call of `trunk` failed over (`why`: the Primary's outcome): a storm of them is logged.
    pub(super) fn failover(&mut self, trunk: &str, why: &str, now: u64) {
        let e = self.storms.entry(trunk.to_string()).or_insert_with(|| Episode::new(STORM_WINDOW_MS, STORM_FAILOVERS));
        if e.event(now) {
            tracing::warn!(%trunk, reason = why, window_s = STORM_WINDOW_MS / 1000, "failover storm: {STORM_FAILOVERS} calls failed over");
        }
    }
}

impl Default for Episodes {
    fn default() -> Episodes {
        Episodes { shedding: Episode::new(SWEEP_EVERY_MS, 1), storms: HashMap::new() }
    }
}

impl Engine {
    /// Trusted sources are never limited: configured networks, IP-authenticated accounts, the
    /// upstream carrier and the other cluster nodes.
    pub(super) fn is_trusted(&self, src: Src) -> bool {
        self.trusted_peer(src.addr.ip()) || super::context::member_at(&*self.cluster, self.cfg.node_id, self.now, src).is_some()
    }

    /// A configured network, an IP-authenticated account or the upstream carrier.
    pub(super) fn trusted_peer(&self, ip: IpAddr) -> bool {
        self.cfg.trusted.iter().any(|n| n.contains(&ip))
            || self.is_upstream(ip)
            || !self.store.by_source(ip).is_empty()
            || self.dns.allowed_by_name(ip)
    }

    /// `ip` is the upstream carrier's (an address its name resolves to, when given by name).
    fn is_upstream(&self, ip: IpAddr) -> bool {
        match &self.cfg.upstream {
            None => false,
            Some(super::Upstream::Addr(a)) => a.ip() == ip,
            Some(super::Upstream::Name(key)) => self.dns.resolves_to(key, ip, self.now),
        }
    }

    /// Count a new request (or a malformed message) from `src`; false when it must be dropped.
    pub(super) fn admit_new_request(&mut self, src: Src) -> bool {
        if self.is_trusted(src) {
            return true;
        }
        match self.guard.new_request(src.addr.ip(), self.now) {
            Verdict::Pass => true,
            Verdict::Drop => {
                self.metrics.guard_drops.with_label_values(&["banned"]).inc();
                false
            }
            Verdict::Banned => {
                self.banned(src.addr.ip(), "request rate");
                false
            }
        }
    }

    /// The node's metrics (the runtime adds the transport's counters).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How many messages wait behind the current one (the runtime's queue depth).
    pub fn set_backlog(&mut self, n: usize) {
        self.backlog = n;
    }

    /// How long the next message waited since it reached the host (kernel buffer and queue).
    pub fn set_waited(&mut self, ms: u64) {
        self.waited_ms = ms;
    }

    /// Past the transaction limit, or too far behind (a new request when more than `shed_backlog`
    /// messages wait, or one that itself waited longer than `shed_wait_ms` once new requests have
    /// stood that late for an interval, `hatrunk_sip::standing`): answer 503 with Retry-After
    /// statelessly and say so. In-dialog
    /// requests (a BYE frees a slot) may use twice the room new ones may.
    pub(super) fn overloaded(&mut self, msg: &SipMessage, src: Src, in_dialog: bool) -> bool {
        let room = if in_dialog { self.cfg.max_transactions.saturating_mul(2) } else { self.cfg.max_transactions };
        let late = !in_dialog && self.standing.late(self.waited_ms, self.cfg.shed_wait_ms, self.now);
        let behind = !in_dialog && (self.backlog > self.cfg.shed_backlog || late);
        if self.tx.servers.len() < room && !behind {
            return false;
        }
        self.metrics.guard_drops.with_label_values(&[if behind { "shed" } else { "overload" }]).inc();
        if self.episodes.shedding.event(self.now) {
            let (backlog, waited_ms, transactions) = (self.backlog, self.waited_ms, self.tx.servers.len());
            tracing::warn!(backlog, waited_ms, transactions, "shedding: new requests get 503 while the node is behind");
        }
        let mut r = build::response(msg, 503, Some(&self.io.tag()));
        r.push("Retry-After", "5");
        self.send(src, r);
        true
    }

    /// Trusted by address alone (no port): [`Engine::is_trusted`] for where only the IP is known.
    fn is_trusted_ip(&self, ip: IpAddr) -> bool {
        self.trusted_peer(ip)
            || self
                .cluster
                .view(self.now)
                .members
                .iter()
                .any(|m| m.member.id != self.cfg.node_id && m.member.sip_addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip() == ip))
    }

    /// Wrong credentials from `ip` for `user`. A trusted source is never banned for them (over
    /// UDP anyone can send from its address); the account's own lockout still counts them.
    pub(super) fn auth_failed(&mut self, ip: IpAddr, user: &str) {
        let was_locked = self.guard.is_locked(user, self.now);
        if self.is_trusted_ip(ip) {
            self.guard.account_failed(user, self.now);
        } else if self.guard.auth_failed(ip, user, self.now) == Verdict::Banned {
            self.banned(ip, "failed authentications");
        }
        if !was_locked && self.guard.is_locked(user, self.now) {
            let s = self.guard.limits().lockout_ms / 1000;
            tracing::warn!(user, source = %ip, lockout_s = s, "account locked after failed authentications");
        }
    }

    fn banned(&mut self, ip: IpAddr, why: &str) {
        let l = self.guard.limits();
        tracing::warn!(source = %ip, reason = why, ban_s = l.ban_ms / 1000, "source banned");
        self.metrics.guard_drops.with_label_values(&["limit"]).inc();
        self.metrics.guard_bans.inc();
    }

    /// Forget expired bans, idle sources and spent nonces that have expired (once a second).
    pub(super) fn sweep_guard(&mut self) {
        if self.now.saturating_sub(self.last_sweep) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep = self.now;
        if let Some(n) = self.episodes.shedding.tick(self.now) {
            tracing::info!(shed = n, "shedding stopped");
        }
        let now = self.now;
        for (trunk, e) in self.episodes.storms.iter_mut() {
            if let Some(n) = e.tick(now) {
                tracing::info!(%trunk, failovers = n, "failover storm over");
            }
        }
        self.episodes.storms.retain(|_, e| !e.idle(now));
        self.guard.sweep(self.now);
        self.nonces.expire(self.now);
        self.metrics.guard_banned.set(self.guard.bans(self.now).len() as i64);
    }
}

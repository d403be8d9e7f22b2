//! Prometheus metrics of a node (served on `[http] listen` at `/metrics`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub responses: IntCounterVec,
    pub calls: IntCounterVec,
    pub cps_limited: IntCounterVec,
    pub failovers: IntCounterVec,
    pub forwards: IntCounterVec,
    pub egress_moves: IntCounterVec,
    pub answered: IntCounter,
    pub malformed: IntCounter,
    pub stray_responses: IntCounter,
    pub retransmissions: IntCounter,
    pub auth_failures: IntCounter,
    pub pool_in_use: IntGaugeVec,
    pub pool_limit: IntGaugeVec,
    pub account_up: IntGaugeVec,
    pub transactions: IntGaugeVec,
    pub calls_in_progress: IntGauge,
    pub lease: IntGaugeVec,
    pub guard_drops: IntCounterVec,
    pub guard_bans: IntCounter,
    pub guard_banned: IntGauge,
    pub stream_connections: IntGauge,
    pub stream_refused: IntCounter,
    pub member_up: IntGaugeVec,
    pub leader_known: IntGauge,
    pub ledger_write: prometheus::Gauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let cv = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        let gv = |n: &str, h: &str, l: &[&str]| IntGaugeVec::new(Opts::new(n, h), l);
        let m = Metrics {
            requests: cv("hatrunk_sip_requests_total", "SIP requests received, by method", &["method"])?,
            responses: cv("hatrunk_sip_responses_sent_total", "SIP responses sent through server transactions, by code", &["code"])?,
            calls: cv("hatrunk_calls_total", "Calls ended, by trunk and CDR disposition", &["trunk", "disposition"])?,
            cps_limited: cv(
                "hatrunk_cps_limited_total",
                "Calls refused (503, Retry-After) because their trunk reached max_calls_per_second, by trunk",
                &["trunk"],
            )?,
            failovers: cv("hatrunk_failovers_total", "Failovers to the Secondary, by what the Primary did", &["reason"])?,
            forwards: cv(
                "hatrunk_forwards_total",
                "Calls forwarded to another node (Advanced HA), by its region and zone",
                &["region", "zone"],
            )?,
            egress_moves: cv(
                "hatrunk_egress_moves_total",
                "Forwarded calls moved to the next node because one did not take them, by what it did",
                &["reason"],
            )?,
            answered: IntCounter::new("hatrunk_calls_answered_total", "Calls answered")?,
            malformed: IntCounter::new("hatrunk_sip_malformed_total", "Malformed SIP messages received")?,
            stray_responses: IntCounter::new("hatrunk_sip_stray_responses_total", "Responses matching no client transaction")?,
            retransmissions: IntCounter::new("hatrunk_sip_retransmissions_total", "Requests retransmitted by client transactions")?,
            auth_failures: IntCounter::new("hatrunk_auth_challenges_total", "Digest challenges and failures")?,
            pool_in_use: gv("hatrunk_pool_in_use", "Concurrent-call slots in use, by trunk", &["trunk"])?,
            pool_limit: gv("hatrunk_pool_limit", "Concurrent-call limit, by trunk", &["trunk"])?,
            account_up: gv("hatrunk_account_health", "Account health: 1 up, 0 down, -1 unknown", &["trunk", "account"])?,
            transactions: gv("hatrunk_sip_transactions", "SIP transactions in memory, by kind", &["kind"])?,
            calls_in_progress: IntGauge::new("hatrunk_calls_in_progress", "Calls being set up or answered on this node")?,
            lease: gv(
                "hatrunk_admission_lease",
                "1 for the state of this node's admission lease: live, expired (no majority), draining, removed",
                &["state"],
            )?,
            guard_drops: cv(
                "hatrunk_guard_drops_total",
                "Requests not served, by reason: banned (source banned), limit (crossed a limit), overload (transaction limit, 503), shed (far behind, 503), queue (503 at the socket, far behind), forged (unsigned forward, 403)",
                &["reason"],
            )?,
            guard_bans: IntCounter::new("hatrunk_guard_bans_total", "Sources banned (request rate or failed authentications)")?,
            guard_banned: IntGauge::new("hatrunk_guard_banned_sources", "Sources banned now")?,
            stream_connections: IntGauge::new("hatrunk_sip_stream_connections", "SIP TCP and TLS connections open now")?,
            stream_refused: IntCounter::new(
                "hatrunk_sip_stream_refused_total",
                "Inbound SIP TCP/TLS connections closed at once: total or per-source connection limit reached",
            )?,
            member_up: gv(
                "hatrunk_member_up",
                "Each member as this node's failure detector sees it: 1 answering, 0 down (zones and regions down are every member of theirs at 0)",
                &["member", "zone", "region", "role"],
            )?,
            ledger_write: prometheus::Gauge::new(
                "hatrunk_ledger_write_seconds",
                "Moving average of this node's answered ledger writes (share grants through Raft): the round trip a call short of room waits on; 0 when none was answered in the last minute",
            )?,
            leader_known: IntGauge::new("hatrunk_cluster_leader_known", "1 while this node knows a Raft leader (trunk changes and share grants need one)")?,
            registry,
        };
        for c in [&m.requests, &m.responses, &m.calls, &m.cps_limited, &m.failovers, &m.forwards, &m.egress_moves] {
            m.registry.register(Box::new(c.clone()))?;
        }
        for c in [&m.answered, &m.malformed, &m.stray_responses, &m.retransmissions, &m.auth_failures] {
            m.registry.register(Box::new(c.clone()))?;
        }
        for g in [&m.pool_in_use, &m.pool_limit, &m.account_up, &m.transactions, &m.lease, &m.member_up] {
            m.registry.register(Box::new(g.clone()))?;
        }
        m.registry.register(Box::new(m.calls_in_progress.clone()))?;
        m.registry.register(Box::new(m.leader_known.clone()))?;
        m.registry.register(Box::new(m.ledger_write.clone()))?;
        m.registry.register(Box::new(m.guard_drops.clone()))?;
        m.registry.register(Box::new(m.guard_bans.clone()))?;
        m.registry.register(Box::new(m.guard_banned.clone()))?;
        m.registry.register(Box::new(m.stream_connections.clone()))?;
        m.registry.register(Box::new(m.stream_refused.clone()))?;
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut buf = String::new();
        let enc = prometheus::TextEncoder::new();
        if let Err(e) = enc.encode_utf8(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        buf
    }

    /// New requests the transport refused at the socket, far behind (`Transports::set_drop_backlog`).
    pub fn note_dropped(&self, total: u64) {
        catch_up(&self.guard_drops.with_label_values(&["queue"]), total);
    }

    /// Copy the transport's connection counters (read once a second).
    pub fn note_streams(&self, open: u64, refused_total: u64) {
        self.stream_connections.set(open as i64);
        catch_up(&self.stream_refused, refused_total);
    }
}

/// Bring a counter up to a total kept elsewhere (the transport's atomics).
fn catch_up(c: &IntCounter, total: u64) {
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

#[cfg(test)]
mod tests {
    /// The alert rules and the dashboard in `cluster-configs/observability/` name only metrics this
    /// node exports (a renamed metric would silently blind them).
    #[test]
    fn the_shipped_rules_and_dashboard_name_only_exported_metrics() {
        let ours = include_str!("metrics.rs");
        let exported: std::collections::BTreeSet<&str> = names(ours).into_iter().collect();
        for (file, text) in [
            ("alerts.yml", include_str!("../../../cluster-configs/observability/alerts.yml")),
            ("alerts_test.yml", include_str!("../../../cluster-configs/observability/alerts_test.yml")),
            ("dashboard.json", include_str!("../../../cluster-configs/observability/dashboard.json")),
        ] {
            let used = names(text);
            assert!(!used.is_empty(), "{file} names no hatrunk metric");
            for n in used {
                assert!(exported.contains(n), "{file} names {n}, which no node exports");
            }
        }
    }

    fn names(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("hatrunk_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            if name.len() > "hatrunk_".len() && !name.ends_with('_') {
                out.push(name);
            }
            rest = &tail[end..];
        }
        out
    }
}

//! The engine's driver: the loop that feeds the proxy engine socket events, admission answers and
//! timer ticks on the node's clock, and carries out the actions it returns (bytes to send, slots to
//! take and give back, bindings to replicate, CDRs to write). An admission answered from the node's
//! own share reaches the engine at once, in the same pass; only one that needs the cluster waits.

use std::sync::Arc;
use std::time::Duration;

use hatrunk_core::pool::Decision;
use hatrunk_sip::transport::{Proto, TransportEvent, Transports};
use tokio::sync::mpsc;

use super::SipIo;
use crate::admission::Admission;
use crate::cluster_health::ClusterHealth;
use crate::config::{NodeConfig, SipListen};
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::proxy::{Action, Engine, EngineConfig};
use crate::status::SharedStatus;
use crate::store::TrunkStore;

/// How long a call waits for admission before it is refused with 503.
const ADMIT_WAIT: Duration = Duration::from_secs(4);

/// The node's parts the engine and its driver share with the admin API and the HTTP endpoint.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) store: Arc<dyn TrunkStore>,
    pub(super) health: Arc<ClusterHealth>,
    pub(super) admission: Arc<dyn Admission>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Arc<SharedStatus>,
    pub(super) dns: Arc<crate::dns::DnsCache>,
}

impl EngineConfig {
    /// What the engine needs from the node's config, with the addresses the transports bound and the
    /// node's nonce secret.
    pub(super) fn from_node(
        cfg: &NodeConfig,
        listen: SipListen,
        transports: &Transports,
        secret: String,
        seed: u64,
    ) -> Result<Self, NodeError> {
        let upstream = cfg
            .upstream
            .target
            .as_deref()
            .map(crate::proxy::Upstream::parse)
            .transpose()
            .map_err(|reason| NodeError::Config { field: "upstream.target".into(), reason })?;
        Ok(EngineConfig {
            node_id: cfg.node.id,
            node: cfg.node.name.clone(),
            zone: cfg.node.zone.clone(),
            region: cfg.node.region.clone(),
            udp: transports.local(Proto::Udp),
            tcp: transports.local(Proto::Tcp),
            tls: transports.has_tls().then(|| transports.local(Proto::Tls)),
            advertise: uri_host(&cfg.sip.advertise.clone().unwrap_or_else(|| listen.udp.ip().to_string())),
            congestion_code: cfg.sip.congestion_code,
            upstream,
            nonce_secret: secret,
            nonce_lifetime_ms: cfg.sip.nonce_lifetime_s * 1000,
            min_expires_s: cfg.sip.min_expires_s,
            max_expires_s: cfg.sip.max_expires_s,
            nat_max_expires_s: cfg.sip.nat_max_expires_s,
            nat_keepalive_ms: u64::from(cfg.sip.nat_keepalive_s) * 1000,
            forward_timeout_ms: cfg.cluster.forward_timeout_ms,
            seed,
            guard: cfg.security.limits(),
            trusted: cfg.security.trusted.clone(),
            max_transactions: cfg.security.max_transactions,
            shed_backlog: cfg.security.shed_backlog,
            shed_wait_ms: cfg.security.shed_wait_ms,
            member_probe_ms: cfg.cluster.ping_interval_ms,
        })
    }
}

/// Start the proxy engine on the node's SIP transports (not on a witness).
pub(super) fn start_sip(
    cfg: &NodeConfig,
    listen: SipListen,
    io: SipIo,
    shared: &Shared,
    clock: fn() -> u64,
    seed: u64,
) -> Result<(tokio::task::JoinHandle<()>, Option<super::SipThread>), NodeError> {
    let SipIo { transports, events, cdrs, secret, freeze, thread } = io;
    let ecfg = EngineConfig::from_node(cfg, listen, &transports, secret, seed)?;
    // twice the engine's own ceiling (about 150 ms of queue), and the engine's age limit: what
    // waited too long in the kernel is refused before the parse
    transports.set_drop_backlog(cfg.security.shed_backlog.saturating_mul(2), Duration::from_millis(cfg.security.shed_wait_ms));
    if transports.dials_tls() {
        let pinned = crate::tls_pin::PinnedPeers::new(cfg)?;
        tokio::spawn(crate::tls_pin::keep_pins(pinned, shared.store.clone(), shared.dns.clone(), clock, Arc::downgrade(&transports)));
    }
    let engine = Engine::new(ecfg, shared.store.clone(), shared.health.clone(), shared.metrics.clone(), shared.status.clone())
        .with_dns(shared.dns.clone());
    let (admitted_tx, admitted) = mpsc::unbounded_channel();
    // called on the main runtime: cluster work the engine asks for goes there, off the SIP thread
    let main = tokio::runtime::Handle::current();
    let driver = Driver {
        engine,
        transports,
        admission: shared.admission.clone(),
        store: shared.store.clone(),
        cdrs,
        clock,
        admitted_tx,
        freeze,
        main,
    };
    let task = match &thread {
        Some(t) => t.handle().spawn(driver.run(events, admitted)),
        None => tokio::spawn(driver.run(events, admitted)),
    };
    Ok((task, thread))
}

type Admitted = (u64, Result<Decision, String>);

struct Driver {
    engine: Engine,
    transports: Arc<Transports>,
    admission: Arc<dyn Admission>,
    store: Arc<dyn TrunkStore>,
    cdrs: mpsc::Sender<Box<hatrunk_core::cdr::Cdr>>,
    clock: fn() -> u64,
    /// Answers that needed the cluster come back here.
    admitted_tx: mpsc::UnboundedSender<Admitted>,
    freeze: Option<tokio::sync::watch::Receiver<bool>>,
    /// The main runtime: admissions that need the ledger and registrations are Raft writes and
    /// gRPC calls, and run there rather than on the SIP thread.
    main: tokio::runtime::Handle,
}

impl Driver {
    async fn run(mut self, mut events: mpsc::Receiver<TransportEvent>, mut admitted: mpsc::UnboundedReceiver<Admitted>) {
        let clock = self.clock;
        let mut sync = tokio::time::interval(Duration::from_secs(1));
        let mut egress_check = tokio::time::interval(Duration::from_millis(self.engine.check_every_ms()));
        loop {
            if let Some(f) = self.freeze.as_mut() {
                if *f.borrow() && f.wait_for(|frozen| !frozen).await.is_err() {
                    return;
                }
            }
            let deadline = self.engine.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep(Duration::from_millis(d.saturating_sub(clock()))).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev, events.len());
                    for _ in 0..64 {
                        match events.try_recv() {
                            Ok(ev) => self.handle(ev, events.len()),
                            Err(_) => break,
                        }
                    }
                }
                Some((id, d)) = admitted.recv() => self.engine.on_admitted(id, d, clock()),
                _ = sleep => self.engine.on_tick(clock()),
                _ = egress_check.tick() => self.engine.check_egress(clock()),
                _ = sync.tick() => {
                    let t = &self.transports;
                    self.engine.metrics().note_streams(t.open_connections(), t.refused_connections());
                    self.engine.metrics().note_dropped(t.dropped_requests());
                    self.engine.sync_probes(clock());
                    self.engine.on_tick(clock());
                }
            }
            self.carry_out();
        }
    }

    fn handle(&mut self, ev: TransportEvent, backlog: usize) {
        self.engine.set_backlog(backlog);
        match ev {
            TransportEvent::Message(m) => {
                self.engine.set_waited(m.arrived.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
                self.engine.on_message(m, (self.clock)())
            }
            TransportEvent::Unreachable { proto, peer } => self.engine.on_unreachable(proto, peer, (self.clock)()),
        }
    }

    /// Carry out the engine's actions, and what those make it do, until it asks for nothing more.
    fn carry_out(&mut self) {
        loop {
            let actions = self.engine.drain();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Send { proto, addr, conn, bytes } => self.transports.send(proto, addr, conn, bytes),
            Action::Admit { call, trunk, limit, slot, cps } => {
                let now = match cps {
                    Some(rate) => super::rated::admit_now(&self.admission, &trunk, limit, &slot, rate),
                    None => self.admission.admit_now(&trunk, limit, &slot),
                };
                if let Some(d) = now {
                    // decided from the local share: the engine hears it now (its actions follow in
                    // this pass of `carry_out`)
                    return self.engine.on_admitted(call, Ok(d), (self.clock)());
                }
                let (adm, tx) = (self.admission.clone(), self.admitted_tx.clone());
                self.main.spawn(async move {
                    // a call does not wait on a cluster that cannot answer: the carrier gets
                    // 503 and may go elsewhere (a grant that lands later is given back)
                    let admit = async {
                        match cps {
                            Some(rate) => super::rated::admit(adm.clone(), trunk, limit, slot.clone(), rate).await,
                            None => adm.admit(trunk, limit, slot.clone()).await,
                        }
                    };
                    let asked = tokio::time::Instant::now();
                    let r = match tokio::time::timeout(ADMIT_WAIT, admit).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => {
                            super::rated::abandon(&adm, &slot);
                            Err(format!("no admission answer within {} ms", ADMIT_WAIT.as_millis()))
                        }
                    };
                    tracing::debug!(call, took_ms = asked.elapsed().as_millis() as u64, decision = ?r, "admission answered by the cluster");
                    let _ = tx.send((call, r));
                });
            }
            Action::Release { slot } => self.admission.release(&slot),
            Action::ReleaseInherited { trunk, call_id } => self.admission.release_inherited(&trunk, &call_id),
            Action::Register { user, contact, route, expires_ms } => {
                let store = self.store.clone();
                self.main.spawn(async move {
                    if let Err(e) = store.register(user.clone(), contact, route, expires_ms).await {
                        tracing::warn!(user, error = %e, "registration not replicated");
                    }
                });
            }
            Action::Cdr(c) => {
                if self.cdrs.try_send(c).is_err() {
                    tracing::error!("CDR queue full; record dropped");
                }
            }
        }
    }
}

/// A host as it goes into a SIP URI or a Via: an IPv6 literal in brackets (RFC 3261 section 25.1),
/// else unchanged. Without them `Via: SIP/2.0/UDP ::1:5060` cannot be parsed back, and every answer
/// echoing our Via or Record-Route was dropped as malformed.
fn uri_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_literal_is_bracketed_in_uris_and_vias() {
        assert_eq!(super::uri_host("::1"), "[::1]");
        assert_eq!(super::uri_host("[::1]"), "[::1]");
        assert_eq!(super::uri_host("192.0.2.1"), "192.0.2.1");
        assert_eq!(super::uri_host("sip.example.net"), "sip.example.net");
    }
}

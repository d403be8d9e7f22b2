//! Running a node: bind sockets, open storage, start the proxy engine loop, the admin gRPC service,
//! the HTTP endpoint and the CDR writer, and stop cleanly on shutdown. This is the edge where
//! actions become I/O; the engine itself decides nothing here.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hatrunk_sip::transport::{TransportEvent, Transports};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;

use hatrunk_consensus::backend::Backend;
use hatrunk_consensus::network::Dialer;
use hatrunk_consensus::pb::cluster_server::ClusterServer;
use hatrunk_consensus::raft::{Consensus, RaftTiming};
use hatrunk_consensus::server::ClusterService;
use hatrunk_consensus::{NodeInfo, NodeRole};

use crate::admin::{pb::admin_server::AdminServer, AdminService};
use crate::admission::{Admission, EscrowAdmission, TIDY_EVERY};
use crate::cluster_health::{ClusterHealth, DetectorTiming};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::http::{router, HttpState};
use crate::metrics::Metrics;
use crate::proxy::{Action, Engine, EngineConfig};
use crate::status::SharedStatus;
use crate::store::{RaftTrunkStore, TrunkStore};

pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How long a call waits for admission before it is refused with 503.
const ADMIT_WAIT: Duration = Duration::from_secs(4);

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// What a node runs on. [`run`] builds it from the config (the Raft store, kernel sockets, the CDR file);
/// the simulation hands in memory storage, turmoil's sockets and its clock. Everything that
/// decides is the same code either way.
pub struct Wiring<B: Backend> {
    pub backend: B,
    pub dialer: Dialer,
    /// Milliseconds since the Unix epoch: the only clock the call path reads.
    pub clock: fn() -> u64,
    /// The SIP side; None on a witness.
    pub sip: Option<SipIo>,
    /// `/metrics` and `/health` (production only).
    pub http: Option<TcpListener>,
    /// Seeds the engine's tags and branches.
    pub seed: u64,
    /// Members to initialise the cluster with on first start (the simulation's fixed topology).
    pub members: Option<BTreeMap<u64, NodeInfo>>,
    /// Who may call the gRPC services (production: from `[tls]` and `[admin]`).
    pub grpc: GrpcSecurity,
    /// Called once the node is assembled, with the handles an observer may read.
    pub on_ready: Option<Box<dyn FnOnce(Handles)>>,
    /// A layer around admission. Production has none; the simulation's check of its own checker
    /// puts a deliberately broken one here to prove the invariants catch it.
    pub admission_layer: Option<AdmissionLayer>,
    /// A layer around the trunk store the call path reads, for the same purpose (a broken build
    /// that sees every trunk's failover policy wrong).
    pub store_layer: Option<StoreLayer>,
}

/// The gRPC server's TLS and the admin token (none of either: an open cluster, for loopback use).
#[derive(Clone, Default)]
pub struct GrpcSecurity {
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    pub token: Option<Arc<str>>,
}

/// Wraps the node's admission (see [`Wiring::admission_layer`]).
pub type AdmissionLayer = fn(Arc<dyn Admission>) -> Arc<dyn Admission>;
/// Wraps the node's trunk store (see [`Wiring::store_layer`]).
pub type StoreLayer = fn(Arc<dyn TrunkStore>) -> Arc<dyn TrunkStore>;

/// A running node's shared parts, for observers (the simulation's invariant checks).
#[derive(Clone)]
pub struct Handles {
    pub consensus: Arc<Consensus>,
    pub admission: Arc<dyn Admission>,
    pub health: Arc<ClusterHealth>,
}

/// The SIP side of a node: started transports, their events, where CDRs go, the nonce secret.
pub struct SipIo {
    pub transports: Arc<Transports>,
    pub events: mpsc::Receiver<TransportEvent>,
    pub cdrs: mpsc::Sender<Box<hatrunk_core::cdr::Cdr>>,
    pub secret: String,
}

/// Run a node until `shutdown` resolves.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    cfg.validate()?;
    let listen = cfg.sip_listen()?;
    std::fs::create_dir_all(&cfg.node.data_dir).map_err(io(cfg.node.data_dir.display().to_string()))?;
    let store = crate::upgrade::open_store(&cfg.node.data_dir).await?;
    let token = crate::tls::admin_token(&cfg)?;
    let cluster_tls = crate::tls::cluster(&cfg.tls, token.is_some())?;
    if cluster_tls.is_none() && !is_loopback(&cfg.cluster.listen) {
        tracing::warn!(listen = %cfg.cluster.listen, "cluster gRPC is not on loopback and has no [tls]: anyone who reaches it can join the cluster");
    }
    let sip = if cfg.node.role() == NodeRole::Sip {
        let udp = UdpSocket::bind(listen.udp).await.map_err(io(format!("udp {}", listen.udp)))?;
        udp_recv_buffer(&udp, cfg.sip.udp_recv_buffer);
        let tcp = TcpListener::bind(listen.tcp).await.map_err(io(format!("tcp {}", listen.tcp)))?;
        let tls = match (listen.tls, crate::tls::sip_server(&cfg)?) {
            (Some(addr), Some(sc)) => Some((TcpListener::bind(addr).await.map_err(io(format!("tls {addr}")))?, sc)),
            _ => None,
        };
        let limits = hatrunk_sip::transport::StreamLimits {
            max_connections: cfg.sip.max_connections,
            per_source: cfg.sip.max_connections_per_source,
            idle: Duration::from_secs(cfg.sip.tcp_idle_s),
        };
        let streams = hatrunk_sip::transport::StreamSetup { tcp, tls, tls_client: Some(crate::tls::sip_client(&cfg)?), limits };
        let (ev_tx, events) = mpsc::channel(65_536);
        let transports = Transports::start(udp, streams, ev_tx)?;
        let cdrs = crate::cdr::start(cfg.cdr_path()).await?;
        Some(SipIo { transports, events, cdrs, secret: crate::upgrade::node_secret(&store).await? })
    } else {
        None
    };
    let http_addr: std::net::SocketAddr =
        cfg.http.listen.parse().map_err(|_| NodeError::Config { field: "http.listen".into(), reason: "bad address".into() })?;
    let http = TcpListener::bind(http_addr).await.map_err(io(format!("http {http_addr}")))?;
    let admin_addr: std::net::SocketAddr =
        cfg.cluster.listen.parse().map_err(|_| NodeError::Config { field: "cluster.listen".into(), reason: "bad address".into() })?;
    let admin_listener = TcpListener::bind(admin_addr).await.map_err(io(format!("cluster/admin {admin_addr}")))?;
    tracing::info!(node = cfg.node.id, role = %cfg.node.role, sip_udp = %listen.udp, sip_tcp = %listen.tcp, cluster = %admin_addr, http = %http_addr, "hatrunk node running");
    let wiring = Wiring {
        backend: store,
        dialer: match &cluster_tls {
            Some(t) => hatrunk_consensus::network::tls_dialer(t.client.clone()),
            None => hatrunk_consensus::network::tcp_dialer(),
        },
        grpc: GrpcSecurity { tls: cluster_tls.map(|t| t.server), token },
        clock: wall_ms,
        sip,
        http: Some(http),
        seed: wall_ms(),
        members: None,
        on_ready: None,
        admission_layer: None,
        store_layer: None,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(admin_listener);
    run_with(cfg, wiring, incoming, shutdown).await
}

/// Run a node on `wiring`, serving the cluster and admin gRPC services on `incoming`, until
/// `shutdown` resolves.
pub async fn run_with<B, I, IO, IE>(
    cfg: NodeConfig,
    wiring: Wiring<B>,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError>
where
    B: Backend,
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    cfg.validate()?;
    let listen = cfg.sip_listen()?;
    let Wiring { backend, dialer, clock, sip, http, seed, members, grpc, on_ready, admission_layer, store_layer } = wiring;
    let cluster_addr = cfg.cluster.advertise.clone().unwrap_or_else(|| cfg.cluster.listen.clone());
    let info = NodeInfo {
        name: cfg.node.name.clone(),
        region: cfg.node.region.clone(),
        zone: cfg.node.zone.clone(),
        role: cfg.node.role(),
        cluster_addr,
        sip_addr: if cfg.node.role() == NodeRole::Sip { listen.udp.to_string() } else { String::new() },
    };
    let timing = RaftTiming {
        heartbeat_ms: cfg.cluster.heartbeat_ms,
        election_min_ms: cfg.cluster.election_min_ms,
        election_max_ms: cfg.cluster.election_max_ms,
        ..RaftTiming::default()
    };
    let consensus = Consensus::start_with(cfg.node.id, info, backend, &timing, dialer).await?;
    if let Some(members) = members {
        if !consensus.is_initialized().await {
            consensus
                .raft
                .initialize(members)
                .await
                .map_err(|e| NodeError::Consensus(hatrunk_consensus::ConsensusError::Raft(format!("initialise: {e}"))))?;
        }
    } else if cfg.cluster.bootstrap && consensus.initialize().await? {
        tracing::info!("initialised a one-voter cluster on first start");
    }
    let store: Arc<dyn TrunkStore> = Arc::new(RaftTrunkStore::new(consensus.clone()));
    let store = match store_layer {
        Some(layer) => layer(store),
        None => store,
    };
    let escrow = Arc::new(EscrowAdmission::new(consensus.clone(), cfg.node.name.clone(), clock));
    tokio::spawn(reconcile(consensus.clone(), escrow.clone()));
    tokio::spawn(ensure_cluster_secret(consensus.clone()));
    tokio::spawn(tidy_shares(escrow.clone()));
    let admission: Arc<dyn Admission> = escrow;
    let admission = match admission_layer {
        Some(layer) => layer(admission),
        None => admission,
    };
    let health = ClusterHealth::new(
        consensus.clone(),
        DetectorTiming { interval_ms: cfg.cluster.ping_interval_ms, threshold_ms: cfg.cluster.failure_threshold_ms },
        clock,
    );
    health.spawn();
    let metrics = Arc::new(Metrics::new().map_err(|e| NodeError::Metrics(e.to_string()))?);
    let status = Arc::new(SharedStatus::default());
    if let Some(f) = on_ready {
        f(Handles { consensus: consensus.clone(), admission: admission.clone(), health: health.clone() });
    }

    let engine_task = match sip {
        Some(io) => Some(start_sip(
            &cfg,
            listen,
            io,
            clock,
            seed,
            store.clone(),
            health.clone(),
            admission.clone(),
            metrics.clone(),
            status.clone(),
        )?),
        None => None,
    };
    let admin = AdminService {
        store: store.clone(),
        admission: admission.clone(),
        status: status.clone(),
        consensus: consensus.clone(),
        health: health.clone(),
        timing,
        token: crate::gate::AddToken(grpc.token.clone()),
        clock,
    };
    if let Some(http_listener) = http {
        let http_state = Arc::new(HttpState { metrics, store, admission, status });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router(http_state)).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
    }
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let mut server = tonic::transport::Server::builder();
    let tls = grpc.tls.is_some();
    if let Some(t) = grpc.tls {
        server = server.tls_config(t).map_err(|e| NodeError::Config { field: "tls".into(), reason: e.to_string() })?;
    }
    let gate = |admin| crate::gate::Gate { tls, token: grpc.token.clone(), admin };
    let cluster_service = ClusterServer::new(ClusterService { consensus: consensus.clone(), quorum: health.quorum.clone() })
        .max_decoding_message_size(hatrunk_consensus::codec::LIMIT as usize);
    let served = server
        .timeout(Duration::from_secs(30))
        .add_service(InterceptedService::new(AdminServer::new(admin), gate(true)))
        .add_service(InterceptedService::new(cluster_service, gate(false)))
        .serve_with_incoming_shutdown(incoming, stop_on_fatal(consensus.clone(), shutdown, fatal_tx))
        .await;
    if let Some(t) = engine_task {
        t.abort();
    }
    let _ = consensus.raft.shutdown().await;
    served.map_err(|e| NodeError::Server(e.to_string()))?;
    if let Ok(why) = fatal_rx.await {
        return Err(NodeError::RaftStopped(format!(
            "the Raft part of this node stopped ({why}); the node exits rather than serve without it. \
             Fix the cause (a full or failing disk under {}) and start it again: acknowledged changes are kept",
            cfg.node.data_dir.display()
        )));
    }
    tracing::info!("hatrunk node stopped");
    Ok(())
}

/// `shutdown`, or the moment the Raft core stops on a fatal error (a log write that failed because
/// the disk is full, say), reported on `fatal`. A node whose Raft stopped could neither commit nor
/// learn commits, so it must not go on taking calls as if it were a member.
async fn stop_on_fatal(consensus: Arc<Consensus>, shutdown: impl Future<Output = ()>, fatal: tokio::sync::oneshot::Sender<String>) {
    let mut m = consensus.raft.metrics();
    let watch = async {
        loop {
            if let Err(e) = &m.borrow().running_state {
                return e.to_string();
            }
            if m.changed().await.is_err() {
                return "the Raft core exited".to_string();
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        why = watch => {
            tracing::error!(error = %why, "raft stopped on a fatal error; stopping the node");
            let _ = fatal.send(why);
        }
    }
}

/// Make sure the cluster has its shared secret: the leader proposes a random one while none is
/// committed (the first committed stays, so two proposals race harmlessly).
async fn ensure_cluster_secret(consensus: Arc<Consensus>) {
    loop {
        if consensus.local(|s| s.cluster_secret.is_some()) {
            return;
        }
        if consensus.is_leader() {
            let secret: String = (0..4).map(|_| format!("{:016x}", hatrunk_consensus::rt::next_u64())).collect();
            let cmd = hatrunk_consensus::Command::SetClusterSecret { secret: hatrunk_consensus::Secret(secret) };
            if let Err(e) = consensus.write(cmd).await {
                tracing::debug!(error = %e, "cluster secret: waiting for the cluster");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Release the slots of this node's previous runs as soon as the cluster can take the write.
async fn reconcile(consensus: Arc<Consensus>, admission: Arc<EscrowAdmission>) {
    loop {
        if consensus.is_initialized().await {
            match admission.reconcile().await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "reconcile: waiting for the cluster"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Give back unused shares and repair the ledger, a few times a second, for the node's life.
async fn tidy_shares(admission: Arc<EscrowAdmission>) {
    let mut tick = tokio::time::interval(TIDY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        admission.tidy().await;
    }
}

/// Start the proxy engine on the node's SIP transports (not on a witness).
#[allow(clippy::too_many_arguments)]
fn start_sip(
    cfg: &NodeConfig,
    listen: crate::config::SipListen,
    io: SipIo,
    clock: fn() -> u64,
    seed: u64,
    store: Arc<dyn TrunkStore>,
    cluster: Arc<ClusterHealth>,
    admission: Arc<dyn Admission>,
    metrics: Arc<Metrics>,
    status: Arc<SharedStatus>,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let SipIo { transports, events, cdrs, secret } = io;
    let upstream = match &cfg.upstream.target {
        Some(t) => {
            let st =
                hatrunk_core::trunk::parse_sip_target(t).map_err(|r| NodeError::Config { field: "upstream.target".into(), reason: r })?;
            let ip = st
                .host
                .parse()
                .map_err(|_| NodeError::Config { field: "upstream.target".into(), reason: "must be a literal IP address".into() })?;
            Some(std::net::SocketAddr::new(ip, st.port))
        }
        None => None,
    };
    let ecfg = EngineConfig {
        node_id: cfg.node.id,
        node: cfg.node.name.clone(),
        zone: cfg.node.zone.clone(),
        region: cfg.node.region.clone(),
        udp: transports.local(hatrunk_sip::transport::Proto::Udp),
        tcp: transports.local(hatrunk_sip::transport::Proto::Tcp),
        tls: transports.has_tls().then(|| transports.local(hatrunk_sip::transport::Proto::Tls)),
        advertise: cfg.sip.advertise.clone().unwrap_or_else(|| listen.udp.ip().to_string()),
        congestion_code: cfg.sip.congestion_code,
        upstream,
        nonce_secret: secret,
        nonce_lifetime_ms: cfg.sip.nonce_lifetime_s * 1000,
        min_expires_s: cfg.sip.min_expires_s,
        max_expires_s: cfg.sip.max_expires_s,
        forward_timeout_ms: cfg.cluster.forward_timeout_ms,
        seed,
        guard: cfg.security.limits(),
        trusted: cfg.security.trusted.clone(),
        max_transactions: cfg.security.max_transactions,
        shed_backlog: cfg.security.shed_backlog,
        shed_wait_ms: cfg.security.shed_wait_ms,
    };
    // twice the engine's own ceiling (about 150 ms of queue), and the engine's age limit: what
    // waited too long in the kernel is refused before the parse
    transports.set_drop_backlog(cfg.security.shed_backlog.saturating_mul(2), Duration::from_millis(cfg.security.shed_wait_ms));
    if transports.dials_tls() {
        let pinned = crate::tls_pin::PinnedPeers::new(cfg)?;
        tokio::spawn(crate::tls_pin::keep_pins(pinned, store.clone(), Arc::downgrade(&transports)));
    }
    let engine = Engine::new(ecfg, store.clone(), cluster, metrics, status);
    Ok(tokio::spawn(engine_loop(engine, events, transports, admission, store, cdrs, clock)))
}

/// Ask for a receive buffer of `want` bytes; say so when the kernel grants less.
fn udp_recv_buffer(udp: &UdpSocket, want: usize) {
    let got = hatrunk_sip::transport::set_recv_buffer(udp, want);
    if got < want {
        tracing::warn!(wanted = want, granted = got, "UDP receive buffer capped by the kernel: raise net.core.rmem_max (docs/security.md)");
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

async fn engine_loop(
    mut engine: Engine,
    mut events: mpsc::Receiver<TransportEvent>,
    transports: Arc<Transports>,
    admission: Arc<dyn Admission>,
    store: Arc<dyn TrunkStore>,
    cdrs: mpsc::Sender<Box<hatrunk_core::cdr::Cdr>>,
    clock: fn() -> u64,
) {
    let (adm_tx, mut adm_rx) = mpsc::unbounded_channel::<(u64, Result<hatrunk_core::pool::Decision, String>)>();
    let mut sync = tokio::time::interval(Duration::from_secs(1));
    let mut egress_check = tokio::time::interval(Duration::from_millis(200));
    loop {
        let deadline = engine.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep(Duration::from_millis(d.saturating_sub(clock()))).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                handle(&mut engine, ev, events.len(), clock);
                for _ in 0..64 {
                    match events.try_recv() {
                        Ok(ev) => handle(&mut engine, ev, events.len(), clock),
                        Err(_) => break,
                    }
                }
            }
            Some((id, d)) = adm_rx.recv() => engine.on_admitted(id, d, clock()),
            _ = sleep => engine.on_tick(clock()),
            _ = egress_check.tick() => engine.check_egress(clock()),
            _ = sync.tick() => {
                engine.metrics().note_streams(transports.open_connections(), transports.refused_connections());
                engine.metrics().note_dropped(transports.dropped_requests());
                engine.sync_probes(clock());
                engine.on_tick(clock());
            }
        }
        for action in engine.drain() {
            match action {
                Action::Send { proto, addr, conn, bytes } => transports.send(proto, addr, conn, bytes),
                Action::Admit { call, trunk, limit, slot } => {
                    if let Some(d) = admission.admit_now(&trunk, limit, &slot) {
                        let _ = adm_tx.send((call, Ok(d)));
                        continue;
                    }
                    let adm = admission.clone();
                    let tx = adm_tx.clone();
                    tokio::spawn(async move {
                        // a call does not wait on a cluster that cannot answer: the carrier gets
                        // 503 and may go elsewhere (a grant that lands later is given back)
                        let r = match tokio::time::timeout(ADMIT_WAIT, adm.admit(trunk, limit, slot)).await {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err(format!("no admission answer within {} ms", ADMIT_WAIT.as_millis())),
                        };
                        let _ = tx.send((call, r));
                    });
                }
                Action::Release { slot } => admission.release(&slot),
                Action::ReleaseInherited { trunk, call_id } => admission.release_inherited(&trunk, &call_id),
                Action::Register { user, contact, route, expires_ms } => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.register(user.clone(), contact, route, expires_ms).await {
                            tracing::warn!(user, error = %e, "registration not replicated");
                        }
                    });
                }
                Action::Cdr(c) => {
                    if cdrs.try_send(c).is_err() {
                        tracing::error!("CDR queue full; record dropped");
                    }
                }
            }
        }
    }
}

fn handle(engine: &mut Engine, ev: TransportEvent, backlog: usize, clock: fn() -> u64) {
    engine.set_backlog(backlog);
    match ev {
        TransportEvent::Message(m) => {
            engine.set_waited(m.arrived.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
            engine.on_message(m, clock())
        }
        TransportEvent::Unreachable { proto, peer } => engine.on_unreachable(proto, peer, clock()),
    }
}

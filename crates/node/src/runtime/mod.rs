//! Running a node: bind sockets, open storage, start the proxy engine loop, the admin gRPC service,
//! the HTTP endpoint and the CDR writer, and stop cleanly on shutdown. This is the edge where
//! actions become I/O; the engine itself decides nothing here.
//!
//! `mod.rs` wires the parts together (from the config in production, from [`Wiring`] in the
//! simulation); `driver.rs` runs the engine and carries out its actions; `tasks.rs` holds the
//! background tasks.

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
use crate::admission::{Admission, EscrowAdmission};
use crate::cluster_health::{ClusterHealth, DetectorTiming};
use crate::config::{NodeConfig, SipListen};
use crate::error::NodeError;
use crate::http::{router, HttpState};
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::{RaftTrunkStore, TrunkStore};

mod driver;
mod rated;
mod sip_thread;
mod tasks;

pub use sip_thread::SipThread;

use driver::Shared;

pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The node's clock: Unix milliseconds as of the first read, advanced by the monotonic clock from
/// then on. It never jumps when the system clock is stepped (NTP, a VM resumed from a snapshot): a
/// step back would otherwise hold every failover timer and heartbeat judgement for as long as the
/// step, and a step forward would fire them at once. CDRs are put back on the wall clock when
/// written ([`crate::cdr`]).
pub fn node_ms() -> u64 {
    static START: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (at, wall) = START.get_or_init(|| (std::time::Instant::now(), wall_ms()));
    wall + at.elapsed().as_millis() as u64
}

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
    /// `/metrics`, `/health` and the status page (production only).
    pub http: Option<HttpSide>,
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
    /// A filter on the lease writes the leader makes, for the same purpose (a broken build whose
    /// lost nodes keep their reserve).
    pub lease_layer: Option<LeaseLayer>,
    /// Resolves PBX targets given by name (production: hickory-resolver; the simulation names none).
    pub resolver: Option<Arc<dyn crate::dns::Resolve>>,
}

/// The HTTP endpoint's listener, and the recent CDRs and rates its status page shows (fed by the
/// node's CDR writer, off the SIP path).
pub struct HttpSide {
    pub listener: TcpListener,
    pub recent: Arc<crate::recent::Recent>,
}

/// The gRPC server's TLS and the admin token (none of either: an open cluster, for loopback use).
#[derive(Clone, Default)]
pub struct GrpcSecurity {
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    pub token: Option<Arc<str>>,
}

/// The DNS client of `[dns]`; one that explains itself on every lookup if none can be made (no
/// `/etc/resolv.conf`), so a node whose trunks name no host starts anyway.
fn resolver(cfg: &NodeConfig) -> Result<Arc<dyn crate::dns::Resolve>, NodeError> {
    let servers = cfg.dns.server_addrs()?;
    Ok(match crate::dns::Hickory::new(&servers, Duration::from_millis(cfg.dns.timeout_ms)) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            tracing::warn!(error = %e, "DNS: no resolver; PBX targets given by name cannot be reached");
            Arc::new(crate::dns::NoResolver(e))
        }
    })
}

/// Wraps the node's admission (see [`Wiring::admission_layer`]).
pub type AdmissionLayer = fn(Arc<dyn Admission>) -> Arc<dyn Admission>;
/// Wraps the node's trunk store (see [`Wiring::store_layer`]).
pub type StoreLayer = fn(Arc<dyn TrunkStore>) -> Arc<dyn TrunkStore>;
/// Filters the lease watch's due writes (see [`Wiring::lease_layer`]).
pub type LeaseLayer = fn(Vec<hatrunk_consensus::types::Command>) -> Vec<hatrunk_consensus::types::Command>;

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
    /// While true the engine handles nothing: its messages queue and its timers wait, as in a
    /// deadlock, while Raft and heartbeats carry on. The simulation's frozen-engine fault; production
    /// has none.
    pub freeze: Option<tokio::sync::watch::Receiver<bool>>,
    /// The thread the SIP path runs on (production); None runs it on the caller's runtime (the
    /// simulation, where turmoil drives one runtime).
    pub thread: Option<SipThread>,
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
    let recent = Arc::new(crate::recent::Recent::default());
    let mut cdr_done = None;
    let sip = if cfg.node.role() == NodeRole::Sip {
        // `[sip] own_thread`, on by default (docs/decisions.md): it saves a quarter of a call's CPU
        let thread = if cfg.sip.own_thread { Some(SipThread::start().map_err(io("the SIP thread"))?) } else { None };
        let (ev_tx, events) = mpsc::channel(65_536);
        let transports = {
            // the sockets register with the SIP thread's reactor, if any, and their loops run there
            let _on_sip_thread = thread.as_ref().map(|t| t.handle().enter());
            start_transports(&cfg, &listen, ev_tx)?
        };
        let cdrs = crate::cdr::start(cfg.cdr_path(), &cfg.cdr, recent.clone()).await?;
        cdr_done = Some(cdrs.done);
        let secret = crate::upgrade::node_secret(&store).await?;
        Some(SipIo { transports, events, cdrs: cdrs.tx, secret, freeze: None, thread })
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
        clock: node_ms,
        sip,
        http: Some(HttpSide { listener: http, recent }),
        seed: wall_ms(),
        members: None,
        on_ready: None,
        admission_layer: None,
        lease_layer: None,
        resolver: Some(resolver(&cfg)?),
        store_layer: None,
    };
    // Nagle off on accepted connections too: `TcpIncoming::from` leaves it on (the builder's
    // `tcp_nodelay` applies only to listeners tonic binds itself), and every small answer (a
    // forwarded write's, an AppendEntries reply) then waited for the peer's delayed ACK, ~40 ms
    // per ledger write (issue 20's binding run)
    let incoming = tonic::transport::server::TcpIncoming::from(admin_listener).with_nodelay(Some(true));
    let ran = run_with(cfg, wiring, incoming, shutdown).await;
    if let Some(done) = cdr_done {
        // the SIP thread stops as `run_with` returns, and with it the CDRs' last sender: wait for
        // the writer to put what it holds on disk, so a clean stop loses no record
        if tokio::time::timeout(Duration::from_secs(2), done).await.is_err() {
            tracing::warn!("the CDR writer did not finish within 2 s of the stop");
        }
    }
    ran
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
    let Wiring { backend, dialer, clock, sip, http, seed, members, grpc, on_ready, admission_layer, store_layer, lease_layer, resolver } =
        wiring;
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
        snapshot_every: cfg.cluster.snapshot_every,
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
    let escrow = Arc::new(
        EscrowAdmission::new(consensus.clone(), cfg.node.name.clone(), cfg.node.role() == NodeRole::Sip).with_lease_layer(lease_layer),
    );
    tokio::spawn(tasks::reconcile(consensus.clone(), escrow.clone()));
    tokio::spawn(tasks::ensure_cluster_secret(consensus.clone()));
    tokio::spawn(escrow.clone().tidy_forever());
    let admission: Arc<dyn Admission> = escrow;
    let admission = match admission_layer {
        Some(layer) => layer(admission),
        None => admission,
    };
    let health = ClusterHealth::new(
        consensus.clone(),
        DetectorTiming {
            interval_ms: cfg.cluster.ping_interval_ms,
            threshold_ms: cfg.cluster.failure_threshold_ms,
            grace_ms: cfg.cluster.heartbeat_grace_ms,
            recover_after: cfg.cluster.recover_after,
        },
        clock,
        cfg.node.role() == NodeRole::Sip,
    );
    health.spawn();
    let metrics = Arc::new(Metrics::new().map_err(|e| NodeError::Metrics(e.to_string()))?);
    let status = Arc::new(SharedStatus::default());
    if let Some(f) = on_ready {
        f(Handles { consensus: consensus.clone(), admission: admission.clone(), health: health.clone() });
    }

    let dns = Arc::new(crate::dns::DnsCache::default());
    if let (Some(r), NodeRole::Sip) = (resolver, cfg.node.role()) {
        let stale_ms = cfg.dns.stale_for_s.saturating_mul(1000);
        // the upstream carrier by name is resolved with the trunks' names
        let upstream = cfg.upstream.target.as_deref().and_then(|t| match crate::proxy::Upstream::parse(t) {
            Ok(crate::proxy::Upstream::Name(key)) => Some(key),
            _ => None,
        });
        let every = Duration::from_millis(250);
        tokio::spawn(crate::dns::keep_resolved(store.clone(), dns.clone(), r, clock, stale_ms, every, upstream.into_iter().collect()));
    }
    let shared =
        Shared { store: store.clone(), health: health.clone(), admission: admission.clone(), metrics, status: status.clone(), dns };
    // the SIP thread lives until the node stops
    let (engine_task, _sip_thread) = match sip {
        Some(io) => {
            let (task, thread) = driver::start_sip(&cfg, listen, io, &shared, clock, seed)?;
            (Some(task), thread)
        }
        None => (None, None),
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
    if let Some(HttpSide { listener: http_listener, recent }) = http {
        let http_state = Arc::new(HttpState {
            metrics: shared.metrics,
            store,
            admission,
            status,
            health: health.clone(),
            recent: recent.clone(),
            token: grpc.token.clone(),
            node: cfg.node.name.clone(),
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(crate::recent::SAMPLE_MS));
            loop {
                tick.tick().await;
                recent.sample(wall_ms());
            }
        });
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
        .serve_with_incoming_shutdown(incoming, tasks::stop_on_fatal(consensus.clone(), shutdown, fatal_tx))
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

/// Bind the SIP sockets and start the transports on them, on the runtime the caller has entered.
fn start_transports(cfg: &NodeConfig, listen: &SipListen, events: mpsc::Sender<TransportEvent>) -> Result<Arc<Transports>, NodeError> {
    let udp = std::net::UdpSocket::bind(listen.udp).map_err(io(format!("udp {}", listen.udp)))?;
    udp.set_nonblocking(true).map_err(io(format!("udp {}", listen.udp)))?;
    let udp = UdpSocket::from_std(udp).map_err(io(format!("udp {}", listen.udp)))?;
    udp_recv_buffer(&udp, cfg.sip.udp_recv_buffer);
    let tcp = listener(listen.tcp, "tcp")?;
    let tls = match (listen.tls, crate::tls::sip_server(cfg)?) {
        (Some(addr), Some(sc)) => Some((listener(addr, "tls")?, sc)),
        _ => None,
    };
    let limits = hatrunk_sip::transport::StreamLimits {
        max_connections: cfg.sip.max_connections,
        per_source: cfg.sip.max_connections_per_source,
        idle: Duration::from_secs(cfg.sip.tcp_idle_s),
    };
    let streams = hatrunk_sip::transport::StreamSetup { tcp, tls, tls_client: Some(crate::tls::sip_client(cfg)?), limits };
    Ok(Transports::start(udp, streams, events)?)
}

/// A SIP stream listener with the backlog tokio's own `bind` gives (1024; std's is 128): PBXes
/// reconnect in bursts after a failover.
fn listener(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, NodeError> {
    let err = || io(format!("{what} {addr}"));
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err())?;
    sock.set_reuseaddr(true).map_err(err())?;
    sock.bind(addr).map_err(err())?;
    sock.listen(1024).map_err(err())
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

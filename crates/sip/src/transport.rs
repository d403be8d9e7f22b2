//! UDP, TCP and TLS transports on tokio behind one handle (RFC 3261 section 18, RFC 5630 for TLS).
//! Everything above sees only [`Proto`], peer addresses and connection ids; streams (TCP and TLS)
//! share one connection table with limits in total, per source address and on idle time (`stream`).
//!
//! Incoming messages and send failures arrive on one channel as [`TransportEvent`]s. A UDP send to a
//! port with nothing listening comes back as an ICMP error, which Linux reports only with
//! `IP_RECVERR`; we read the error queue to learn which destination failed, so failover on
//! "connection error" is immediate over UDP as it is over TCP.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::error::SipError;
use crate::framing::MAX_MESSAGE;

mod kernel;
mod stream;

pub use kernel::set_recv_buffer;
use kernel::KernelUdp;
use stream::{accept_loop, Conns};
pub use stream::{StreamLimits, StreamSetup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
}

impl Proto {
    pub fn via_name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }

    /// The `transport=` URI parameter for this protocol (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Proto::Udp => "",
            Proto::Tcp => ";transport=tcp",
            Proto::Tls => ";transport=tls",
        }
    }

    pub fn reliable(self) -> bool {
        self != Proto::Udp
    }
}

/// A message as it came off a socket, not yet parsed.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub bytes: Bytes,
    pub proto: Proto,
    pub peer: SocketAddr,
    /// The stream connection it came on (responses go back on it).
    pub conn: Option<u64>,
    /// When it reached this host (for UDP, the kernel's receive time), on tokio's clock, which
    /// the simulation drives: how long a request has waited decides whether it is still served.
    pub arrived: tokio::time::Instant,
}

#[derive(Debug, Clone)]
pub enum TransportEvent {
    Message(Incoming),
    /// Nothing could be delivered to `peer` (ICMP unreachable, TCP refused or reset).
    Unreachable {
        proto: Proto,
        peer: SocketAddr,
    },
}

/// A datagram socket: the kernel's UDP socket in production, a simulated one in turmoil. The
/// receive loop is generic over it, so receiving costs no allocation or dynamic call.
pub trait Datagram: Send + Sync + 'static {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Send one datagram without waiting; also returns destinations learned unreachable meanwhile.
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>);
    /// Receive one datagram: its length, its sender, and how long it waited below us (in the
    /// kernel's socket buffer; zero where that is not known).
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<(usize, SocketAddr, Duration)>> + Send;
    /// After a failed receive: the destinations reported unreachable.
    fn unreachable(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
}

/// The sending half of a [`Datagram`], which is all [`Transports`] keeps.
trait SendDatagram: Send + Sync {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>);
}

impl<D: Datagram> SendDatagram for D {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Datagram::local_addr(self)
    }
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>) {
        Datagram::send(self, peer, bytes)
    }
}

/// The node's sockets.
pub struct Transports {
    udp: Arc<dyn SendDatagram>,
    /// None when the node has no SIP over TCP (a simulated node).
    tcp_local: Option<SocketAddr>,
    tls_local: Option<SocketAddr>,
    tls_client: Option<tokio_rustls::TlsConnector>,
    /// Peers verified their own way (a PBX account's pinned certificates) instead of `tls_client`.
    tls_peers: Mutex<HashMap<SocketAddr, tokio_rustls::TlsConnector>>,
    /// The name a peer reached over TLS was resolved from: sent as SNI and checked against its
    /// certificate (otherwise the certificate must name the address).
    tls_names: Mutex<HashMap<SocketAddr, String>>,
    limits: StreamLimits,
    conns: Mutex<Conns>,
    next_id: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    /// Past this many messages waiting for the engine, or a request that has waited longer than
    /// `drop_wait_ms` since it reached the host once new requests have stood that late for an
    /// interval (`standing`), new requests are refused at the socket.
    drop_backlog: AtomicUsize,
    drop_wait_ms: AtomicU64,
    /// Whether new requests have stood late (see [`crate::standing`]).
    standing: Mutex<crate::standing::Standing>,
    /// When these transports started, on the runtime's clock.
    started: tokio::time::Instant,
    dropped: AtomicU64,
    epoch: Instant,
    events: mpsc::Sender<TransportEvent>,
}

impl Transports {
    /// Start UDP, TCP and (if configured) TLS on the given bound sockets (binding is the caller's,
    /// so tests and simulations can hand in their own).
    pub fn start(udp: UdpSocket, streams: StreamSetup, events: mpsc::Sender<TransportEvent>) -> Result<Arc<Transports>, SipError> {
        let err = |e: std::io::Error| SipError::Transport { peer: "local".into(), reason: e.to_string() };
        let tcp_local = streams.tcp.local_addr().map_err(err)?;
        let udp = Arc::new(KernelUdp::new(udp).map_err(err)?);
        let mut t = Self::build(udp.clone(), Some(tcp_local), events);
        let tls = match streams.tls {
            Some((l, cfg)) => Some((l.local_addr().map_err(err)?, l, tokio_rustls::TlsAcceptor::from(cfg))),
            None => None,
        };
        t.tls_local = tls.as_ref().map(|(a, _, _)| *a);
        t.tls_client = streams.tls_client.map(tokio_rustls::TlsConnector::from);
        t.limits = streams.limits;
        let t = Arc::new(t);
        tokio::spawn(udp_loop(t.clone(), udp));
        tokio::spawn(accept_loop(t.clone(), streams.tcp, None));
        if let Some((_, l, acceptor)) = tls {
            tokio::spawn(accept_loop(t.clone(), l, Some(acceptor)));
        }
        Ok(t)
    }

    /// Start SIP over one datagram socket only (no TCP): how a simulated node runs.
    pub fn start_datagram<D: Datagram>(udp: Arc<D>, events: mpsc::Sender<TransportEvent>) -> Arc<Transports> {
        let t = Arc::new(Self::build(udp.clone(), None, events));
        tokio::spawn(udp_loop(t.clone(), udp));
        t
    }

    fn build(udp: Arc<dyn SendDatagram>, tcp_local: Option<SocketAddr>, events: mpsc::Sender<TransportEvent>) -> Transports {
        Transports {
            udp,
            tcp_local,
            tls_local: None,
            tls_client: None,
            tls_peers: Mutex::new(HashMap::new()),
            tls_names: Mutex::new(HashMap::new()),
            limits: StreamLimits::default(),
            conns: Mutex::new(Conns { by_id: HashMap::new(), by_peer: HashMap::new(), per_ip: HashMap::new() }),
            next_id: AtomicU64::new(1),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            drop_backlog: AtomicUsize::new(usize::MAX),
            drop_wait_ms: AtomicU64::new(u64::MAX),
            standing: Mutex::new(crate::standing::Standing::default()),
            started: tokio::time::Instant::now(),
            dropped: AtomicU64::new(0),
            epoch: Instant::now(),
            events,
        }
    }

    /// Replace the peers reached over TLS with their own client config (pinned certificates) instead
    /// of the node-wide one. New connections use it; one already open stays as it was verified.
    pub fn set_tls_peers(&self, peers: HashMap<SocketAddr, Arc<tokio_rustls::rustls::ClientConfig>>) {
        let peers = peers.into_iter().map(|(a, c)| (a, tokio_rustls::TlsConnector::from(c))).collect();
        *self.tls_peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// The names peers reached over TLS go by (a PBX target given by name and resolved to them).
    pub fn set_tls_names(&self, names: HashMap<SocketAddr, String>) {
        *self.tls_names.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// Who `peer` must prove to be over TLS: the name it was resolved from, else its address.
    pub(crate) fn tls_server_name(&self, peer: SocketAddr) -> tokio_rustls::rustls::pki_types::ServerName<'static> {
        let names = self.tls_names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .get(&peer)
            .and_then(|n| tokio_rustls::rustls::pki_types::ServerName::try_from(n.trim_end_matches('.').to_string()).ok())
            .unwrap_or_else(|| tokio_rustls::rustls::pki_types::ServerName::IpAddress(peer.ip().into()))
    }

    /// Whether this node reaches peers over TLS at all (a simulated node does not).
    pub fn dials_tls(&self) -> bool {
        self.tls_client.is_some()
    }

    fn tls_connector(&self, peer: SocketAddr) -> Option<tokio_rustls::TlsConnector> {
        let peers = self.tls_peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).cloned().or_else(|| self.tls_client.clone())
    }

    /// Stream connections open now (TCP and TLS, both directions).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Inbound connections closed at once because a limit was reached, since start.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The last line of defence under overload. The engine refuses new requests with 503 while it
    /// keeps up with refusing; when even that falls behind, a queue that keeps growing would make
    /// every answer late, every INVITE retransmitted, and the overload permanent. So past `n`
    /// messages waiting for the engine, or once new requests have waited longer than `wait` since
    /// they reached the host (in the kernel's buffer: a queue the engine cannot count) for an
    /// interval ([`crate::standing`]: one stall of the host is not a queue), a new UDP
    /// request (any request but ACK, BYE and CANCEL, which end things) is answered as it comes
    /// off the socket by [`crate::build::far_behind_refusal`] (a stateless 503 built from the raw
    /// bytes, without the full parse), or dropped when it cannot be. The ACK of such a refusal (its To tag is
    /// [`REFUSAL_TAG`]) is absorbed here too. Responses always go on.
    pub fn set_drop_backlog(&self, n: usize, wait: Duration) {
        self.drop_backlog.store(n, Ordering::Relaxed);
        self.drop_wait_ms.store(wait.as_millis().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// New requests refused or dropped at the socket by [`Transports::set_drop_backlog`]'s rule.
    pub fn dropped_requests(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hand a received datagram to the engine, unless the queue is past the drop mark and it is
    /// a new request, or it is the ACK of a refusal sent from here; false once the engine is gone.
    async fn deliver(&self, m: Incoming) -> bool {
        let waiting = self.events.max_capacity() - self.events.capacity();
        // late, and new requests have stood late for an interval: not one stall of the host
        let late = || {
            // on the runtime's clock, as `arrived` is (simulated time in the simulation)
            let now = tokio::time::Instant::now();
            let waited = now.saturating_duration_since(m.arrived).as_millis().try_into().unwrap_or(u64::MAX);
            let now = now.saturating_duration_since(self.started).as_millis().try_into().unwrap_or(u64::MAX);
            let target = self.drop_wait_ms.load(Ordering::Relaxed);
            self.standing.lock().unwrap_or_else(|p| p.into_inner()).late(waited, target, now)
        };
        if starts_something(&m.bytes) && (waiting > self.drop_backlog.load(Ordering::Relaxed) || late()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(reply) = crate::build::far_behind_refusal(&m.bytes) {
                self.send_udp(m.peer, &reply);
            }
            return true;
        }
        if acks_refusal(&m.bytes) {
            return true;
        }
        self.events.send(TransportEvent::Message(m)).await.is_ok()
    }

    pub fn local(&self, proto: Proto) -> SocketAddr {
        let udp = self.udp.local_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        match proto {
            Proto::Udp => udp,
            Proto::Tcp => self.tcp_local.unwrap_or(udp),
            Proto::Tls => self.tls_local.or(self.tcp_local).unwrap_or(udp),
        }
    }

    /// Whether this node listens for SIP over TLS.
    pub fn has_tls(&self) -> bool {
        self.tls_local.is_some()
    }

    /// Send `bytes` to `peer`. Over TCP, `conn` (if still open) is used first, then any open
    /// connection to `peer`, then a new one. Failures come back as [`TransportEvent::Unreachable`].
    pub fn send(self: &Arc<Self>, proto: Proto, peer: SocketAddr, conn: Option<u64>, bytes: Bytes) {
        match proto {
            Proto::Udp => self.send_udp(peer, &bytes),
            Proto::Tcp | Proto::Tls => self.send_stream(proto, peer, conn, bytes),
        }
    }

    /// Linux reports a pending ICMP error on the next call on the socket, whoever it is for: a
    /// send to a live PBX can fail with "connection refused" because a dead node's port was
    /// unreachable a moment earlier. That error is not this peer's: read the error queue, which
    /// names the real destinations, and send again (the pending error is cleared by reporting it).
    fn send_udp(&self, peer: SocketAddr, bytes: &[u8]) {
        let (delivered, dead) = self.udp.send(peer, bytes);
        for d in dead {
            let _ = self.events.try_send(TransportEvent::Unreachable { proto: Proto::Udp, peer: d });
        }
        if let Err(e) = delivered {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                let _ = self.events.try_send(TransportEvent::Unreachable { proto: Proto::Udp, peer });
            }
            tracing::debug!(%peer, error = %e, "udp send failed");
        }
    }
}

async fn udp_loop<D: Datagram>(t: Arc<Transports>, udp: Arc<D>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match udp.recv(&mut buf).await {
            Ok((n, peer, waited)) => {
                let now = tokio::time::Instant::now();
                let arrived = now.checked_sub(waited).unwrap_or(now);
                let m = Incoming { bytes: Bytes::copy_from_slice(&buf[..n]), proto: Proto::Udp, peer, conn: None, arrived };
                if !t.deliver(m).await {
                    return;
                }
            }
            Err(_) => {
                for peer in udp.unreachable() {
                    let _ = t.events.send(TransportEvent::Unreachable { proto: Proto::Udp, peer }).await;
                }
            }
        }
    }
}

/// The To tag of the refusals [`Transports::set_drop_backlog`] sends; their ACKs are absorbed.
pub const REFUSAL_TAG: &str = "hatrunk-refused";

/// The ACK of a refusal sent by the transport: nothing above needs to see it.
fn acks_refusal(bytes: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"tag=hatrunk-refused";
    let b = bytes.trim_ascii_start();
    b.starts_with(b"ACK ") && b.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// A request that may start something new (not a response, ACK, BYE or CANCEL), judged from
/// its first bytes only.
fn starts_something(bytes: &[u8]) -> bool {
    let b = bytes.trim_ascii_start();
    !(b.starts_with(b"SIP/") || b.starts_with(b"ACK ") || b.starts_with(b"BYE ") || b.starts_with(b"CANCEL "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the drop mark, new requests are refused at the socket (or dropped when no refusal can
    /// be built) while responses, ACK, BYE and CANCEL still reach the engine; the ACK of such a
    /// refusal is absorbed.
    #[tokio::test]
    async fn past_the_drop_mark_new_requests_are_refused_at_the_socket_and_the_rest_delivered() {
        let sock = Arc::new(KernelUdp::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")).expect("socket"));
        let to = sock.0.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(16);
        let t = Transports::start_datagram(sock, tx);
        t.set_drop_backlog(2, Duration::from_secs(3600));
        let invite = |id: &str| {
            format!(
                "INVITE sip:{id}@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{id}\r\nFrom: <sip:c@h>;tag=f\r\n\
                To: <sip:{id}@h>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let (d, i) = (invite("d"), invite("i"));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sent = [
            "INVITE a",
            "OPTIONS b",
            "INVITE c",
            d.as_str(),
            "REGISTER e",
            "SIP/2.0 200 OK",
            "BYE f",
            "ACK g",
            "CANCEL h",
            i.as_str(),
            "ACK sip:x SIP/2.0\r\nTo: <sip:x>;tag=hatrunk-refused\r\n\r\n",
        ];
        for m in sent {
            client.send_to(m.as_bytes(), to).await.expect("send");
        }
        let mut got = Vec::new();
        while got.len() < 7 {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open");
            if let TransportEvent::Message(m) = ev {
                got.push(String::from_utf8_lossy(&m.bytes).into_owned());
            }
        }
        assert_eq!(got, ["INVITE a", "OPTIONS b", "INVITE c", "SIP/2.0 200 OK", "BYE f", "ACK g", "CANCEL h"]);
        assert_eq!(t.dropped_requests(), 3);
        let mut buf = [0u8; 1024];
        for want in ["d", "i"] {
            let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("a refusal")
                .expect("recv");
            let reply = String::from_utf8_lossy(&buf[..n]);
            assert!(reply.starts_with("SIP/2.0 503 ") && reply.contains(&format!("Call-ID: {want}\r\n")), "{reply}");
        }
        // the refusal's ACK is absorbed: the next thing delivered is what followed it
        client.send_to(b"BYE z", to).await.expect("send");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("in time").expect("open");
        assert!(matches!(next, TransportEvent::Message(m) if &m.bytes[..] == b"BYE z"));
        assert!(starts_something(b"\r\nINVITE sip:x SIP/2.0") && !starts_something(b"SIP/2.0 503 Service Unavailable"));
    }

    /// New requests that keep arriving past the mark (they waited in the kernel's buffer, say)
    /// are refused at the socket however short the engine's queue, once they have for an interval
    /// (`crate::standing`); the first late one is taken (one stall is no queue), and a response
    /// that waited as long always goes on.
    #[tokio::test(start_paused = true)]
    async fn requests_that_stay_late_are_refused_however_short_the_queue() {
        let sock = Arc::new(KernelUdp::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")).expect("socket"));
        let (tx, mut rx) = mpsc::channel(16);
        let t = Transports::start_datagram(sock, tx);
        t.set_drop_backlog(usize::MAX, Duration::from_millis(100));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        tokio::time::advance(Duration::from_secs(1)).await;
        let peer = client.local_addr().expect("addr");
        let at = |ago: u64, text: &'static str| Incoming {
            bytes: Bytes::from(text),
            proto: Proto::Udp,
            peer,
            conn: None,
            arrived: tokio::time::Instant::now().checked_sub(Duration::from_millis(ago)).expect("uptime"),
        };
        assert!(t.deliver(at(500, "INVITE old1")).await);
        for _ in 0..2 {
            tokio::time::advance(Duration::from_millis(60)).await;
            assert!(t.deliver(at(500, "INVITE old2")).await);
        }
        assert!(t.deliver(at(500, "SIP/2.0 180 Ringing")).await);
        assert!(t.deliver(at(0, "INVITE new")).await);
        let mut got = Vec::new();
        while let Ok(TransportEvent::Message(m)) = rx.try_recv() {
            got.push(String::from_utf8_lossy(&m.bytes).into_owned());
        }
        assert_eq!(got, ["INVITE old1", "INVITE old2", "SIP/2.0 180 Ringing", "INVITE new"]);
        assert_eq!(t.dropped_requests(), 1, "the INVITE late 120 ms after the first late one");
    }
}

//! UDP, TCP and TLS transports on tokio behind one handle (RFC 3261 section 18, RFC 5630 for TLS).
//! Everything above sees only [`Proto`], peer addresses and connection ids; streams (TCP and TLS)
//! share one connection table with limits in total, per source address and on idle time.
//!
//! Incoming messages and send failures arrive on one channel as [`TransportEvent`]s. A UDP send to a
//! port with nothing listening comes back as an ICMP error, which Linux reports only with
//! `IP_RECVERR`; we read the error queue to learn which destination failed, so failover on
//! "connection error" is immediate over UDP as it is over TCP.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use crate::error::SipError;
use crate::framing::{next_frame, MAX_MESSAGE};

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

/// Per-connection outgoing queue depth; a peer that does not read loses messages, we keep no more.
const CONN_QUEUE: usize = 1024;
/// A TLS handshake (or an outbound connect) not done within this gives up: a peer that opens
/// connections and never finishes them holds a slot for no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An inbound connection that has not sent one complete message within this is closed.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on stream connections (TCP and TLS together). Past them a new inbound connection is
/// closed at once and an outbound one is reported unreachable; memory never grows with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open at once, inbound and outbound.
    pub max_connections: u32,
    /// Inbound connections open at once from one IP address.
    pub per_source: u32,
    /// A connection with no traffic either way for this long is closed.
    pub idle: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { max_connections: 4096, per_source: 64, idle: Duration::from_secs(900) }
    }
}

/// The stream side of [`Transports::start`]: the TCP listener, TLS if configured, the limits.
pub struct StreamSetup {
    pub tcp: TcpListener,
    /// The `tls:` listener and the node's SIP certificate.
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// How we verify PBXs and carriers we reach over TLS (None: no outbound TLS).
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    pub limits: StreamLimits,
}

struct Conns {
    by_id: HashMap<u64, mpsc::Sender<Bytes>>,
    by_peer: HashMap<(Proto, SocketAddr), u64>,
    /// Inbound connections open per source address.
    per_ip: HashMap<IpAddr, u32>,
}

/// A datagram socket: the kernel's UDP socket in production, a simulated one in turmoil. The
/// receive loop is generic over it, so receiving costs no allocation or dynamic call.
pub trait Datagram: Send + Sync + 'static {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Send one datagram without waiting; also returns destinations learned unreachable meanwhile.
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>);
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<(usize, SocketAddr)>> + Send;
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

/// The kernel's UDP socket, with ICMP errors read from its error queue (`IP_RECVERR`).
struct KernelUdp(UdpSocket);

impl Datagram for KernelUdp {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>) {
        send_datagram(&self.0, peer, bytes)
    }
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<(usize, SocketAddr)>> + Send {
        self.0.recv_from(buf)
    }
    fn unreachable(&self) -> Vec<SocketAddr> {
        drain_icmp_errors(&self.0)
    }
}

/// The node's sockets.
pub struct Transports {
    udp: Arc<dyn SendDatagram>,
    /// None when the node has no SIP over TCP (a simulated node).
    tcp_local: Option<SocketAddr>,
    tls_local: Option<SocketAddr>,
    tls_client: Option<tokio_rustls::TlsConnector>,
    limits: StreamLimits,
    conns: Mutex<Conns>,
    next_id: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    epoch: Instant,
    events: mpsc::Sender<TransportEvent>,
}

impl Transports {
    /// Start UDP, TCP and (if configured) TLS on the given bound sockets (binding is the caller's,
    /// so tests and simulations can hand in their own).
    pub fn start(udp: UdpSocket, streams: StreamSetup, events: mpsc::Sender<TransportEvent>) -> Result<Arc<Transports>, SipError> {
        let err = |e: std::io::Error| SipError::Transport { peer: "local".into(), reason: e.to_string() };
        let tcp_local = streams.tcp.local_addr().map_err(err)?;
        let udp_local = udp.local_addr().map_err(err)?;
        if udp_local.is_ipv4() {
            nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::Ipv4RecvErr, &true).map_err(|e| err(std::io::Error::from(e)))?;
        }
        let udp = Arc::new(KernelUdp(udp));
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
            limits: StreamLimits::default(),
            conns: Mutex::new(Conns { by_id: HashMap::new(), by_peer: HashMap::new(), per_ip: HashMap::new() }),
            next_id: AtomicU64::new(1),
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
            events,
        }
    }

    /// Stream connections open now (TCP and TLS, both directions).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Inbound connections closed at once because a limit was reached, since start.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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

    fn send_stream(self: &Arc<Self>, proto: Proto, peer: SocketAddr, conn: Option<u64>, bytes: Bytes) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let id = conn.filter(|c| conns.by_id.contains_key(c)).or_else(|| conns.by_peer.get(&(proto, peer)).copied());
        if let Some(tx) = id.and_then(|id| conns.by_id.get(&id)) {
            if tx.try_send(bytes).is_err() {
                tracing::warn!(%peer, "stream send queue full or closed; message dropped");
            }
            return;
        }
        let connector = match proto {
            Proto::Tls => self.tls_client.clone(),
            _ => None,
        };
        let usable = self.tcp_local.is_some() && (proto != Proto::Tls || connector.is_some());
        if self.open.load(Ordering::Relaxed) >= u64::from(self.limits.max_connections) || !usable {
            if !usable {
                tracing::warn!(%peer, ?proto, "no outbound {} configured on this node", proto.via_name());
            }
            let _ = self.events.try_send(TransportEvent::Unreachable { proto, peer });
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let _ = tx.try_send(bytes);
        conns.by_id.insert(id, tx);
        conns.by_peer.insert((proto, peer), id);
        drop(conns);
        self.open.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            let connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                let tcp = TcpStream::connect(peer).await?;
                let _ = tcp.set_nodelay(true);
                Ok::<_, std::io::Error>(tcp)
            })
            .await;
            let tcp = match connected {
                Ok(Ok(tcp)) => tcp,
                _ => return me.failed(id, proto, peer).await,
            };
            match connector {
                None => me.run_conn(id, proto, peer, tcp, rx, false).await,
                Some(c) => {
                    let name = rustls::pki_types::ServerName::IpAddress(peer.ip().into());
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, c.connect(name, tcp)).await {
                        Ok(Ok(tls)) => me.run_conn(id, proto, peer, tls, rx, false).await,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "tls handshake with peer failed");
                            me.failed(id, proto, peer).await
                        }
                        Err(_) => me.failed(id, proto, peer).await,
                    }
                }
            }
        });
    }

    async fn failed(&self, id: u64, proto: Proto, peer: SocketAddr) {
        self.forget(id, proto, peer, false);
        let _ = self.events.send(TransportEvent::Unreachable { proto, peer }).await;
    }

    /// Drop a connection from the tables (its slot in the counters too).
    fn forget(&self, id: u64, proto: Proto, peer: SocketAddr, inbound: bool) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.by_id.remove(&id);
        if conns.by_peer.get(&(proto, peer)) == Some(&id) {
            conns.by_peer.remove(&(proto, peer));
        }
        if inbound {
            if let Some(n) = conns.per_ip.get_mut(&peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    conns.per_ip.remove(&peer.ip());
                }
            }
        }
        drop(conns);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Read messages off a connection until it closes, goes idle or sends something unframeable;
    /// a writer task drains its queue meanwhile.
    async fn run_conn<S>(self: Arc<Self>, id: u64, proto: Proto, peer: SocketAddr, stream: S, mut rx: mpsc::Receiver<Bytes>, inbound: bool)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let last = Arc::new(AtomicU64::new(self.now_ms()));
        let (me, seen) = (self.clone(), last.clone());
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                seen.store(me.now_ms(), Ordering::Relaxed);
            }
            let _ = wr.shutdown().await;
        });
        let mut buf = BytesMut::with_capacity(4096);
        let mut got_one = !inbound;
        'read: loop {
            let idle = if got_one { self.limits.idle } else { FIRST_MESSAGE_TIMEOUT.min(self.limits.idle) };
            let quiet = Duration::from_millis(self.now_ms().saturating_sub(last.load(Ordering::Relaxed)));
            let Some(wait) = idle.checked_sub(quiet).filter(|w| !w.is_zero()) else {
                tracing::debug!(%peer, ?proto, "closing idle connection");
                break;
            };
            let read = match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
                Err(_) => continue, // re-check: the writer may have been busy meanwhile
                Ok(r) => r,
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => loop {
                    last.store(self.now_ms(), Ordering::Relaxed);
                    match next_frame(&mut buf) {
                        Ok(Some(frame)) => {
                            got_one = true;
                            let m = Incoming { bytes: frame.freeze(), proto, peer, conn: Some(id) };
                            if self.events.send(TransportEvent::Message(m)).await.is_err() {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "closing stream connection: unframeable stream");
                            break 'read;
                        }
                    }
                },
            }
        }
        self.forget(id, proto, peer, inbound);
        writer.abort();
    }

    /// Admit an inbound connection against the limits; its id and queue when admitted.
    fn admit(&self, proto: Proto, peer: SocketAddr) -> Option<(u64, mpsc::Receiver<Bytes>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = conns.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if self.open.load(Ordering::Relaxed) >= u64::from(self.limits.max_connections) || from_ip >= self.limits.per_source {
            drop(conns);
            let n = self.refused.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(%peer, refused_so_far = n + 1, "refusing stream connection: connection limit reached");
            }
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        conns.by_id.insert(id, tx);
        conns.by_peer.insert((proto, peer), id);
        *conns.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some((id, rx))
    }
}

async fn accept_loop(t: Arc<Transports>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    let proto = if tls.is_some() { Proto::Tls } else { Proto::Tcp };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, rx)) = t.admit(proto, peer) else {
            continue; // dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        let t = t.clone();
        match tls.clone() {
            None => {
                tokio::spawn(t.run_conn(id, proto, peer, stream, rx, true));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => t.run_conn(id, proto, peer, s, rx, true).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            t.forget(id, proto, peer, true);
                        }
                        Err(_) => t.forget(id, proto, peer, true),
                    }
                });
            }
        }
    }
}

async fn udp_loop<D: Datagram>(t: Arc<Transports>, udp: Arc<D>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        match udp.recv(&mut buf).await {
            Ok((n, peer)) => {
                let m = Incoming { bytes: Bytes::copy_from_slice(&buf[..n]), proto: Proto::Udp, peer, conn: None };
                if t.events.send(TransportEvent::Message(m)).await.is_err() {
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

/// Send one datagram; also returns the destinations the socket reported unreachable meanwhile.
/// "Connection refused" on a send is always such a report (an unconnected UDP send cannot be
/// refused), so it is never taken as `peer`'s failure.
fn send_datagram(sock: &UdpSocket, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>) {
    let mut dead = Vec::new();
    for _ in 0..8 {
        match sock.try_send_to(bytes, peer) {
            Ok(_) => return (Ok(()), dead),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => dead.extend(drain_icmp_errors(sock)),
            Err(e) => return (Err(e), dead),
        }
    }
    (Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "socket kept reporting other peers' errors")), dead)
}

/// Read queued ICMP errors (IP_RECVERR); each names the destination we could not reach.
fn drain_icmp_errors(sock: &UdpSocket) -> Vec<SocketAddr> {
    use nix::sys::socket::{recvmsg, MsgFlags, SockaddrIn};
    let mut out = Vec::new();
    let mut data = [0u8; 1024];
    let mut cmsg = nix::cmsg_space!([u8; 512]);
    for _ in 0..64 {
        let mut iov = [std::io::IoSliceMut::new(&mut data)];
        match recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT) {
            Ok(msg) => {
                if let Some(a) = msg.address {
                    out.push(SocketAddr::V4(std::net::SocketAddrV4::new(a.ip(), a.port())));
                }
            }
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel reports a dead port's ICMP error on the next send to anyone; that send must
    /// still go out, and the error must name the dead port, not the live one.
    #[tokio::test]
    async fn a_pending_icmp_error_is_not_the_next_peers_failure() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvErr, &true).expect("IP_RECVERR");
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr"); // closed on drop
        let live = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        sock.send_to(b"x", dead).await.expect("first send");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the ICMP error is queued by now
        let (sent, unreachable) = send_datagram(&sock, live.local_addr().expect("addr"), b"hello");
        assert!(sent.is_ok(), "{sent:?}");
        assert_eq!(unreachable, vec![dead]);
        let mut buf = [0u8; 16];
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(5), live.recv_from(&mut buf)).await.expect("delivered").expect("recv");
        assert_eq!(&buf[..n], b"hello");
    }

    async fn streams(limits: StreamLimits) -> (Arc<Transports>, SocketAddr, mpsc::Receiver<TransportEvent>) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel(16);
        let t = Transports::start(udp, StreamSetup { tcp, tls: None, tls_client: None, limits }, tx).expect("start");
        (t, addr, rx)
    }

    /// Whether the node closed `s` (EOF or reset) within a few seconds.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }

    #[tokio::test]
    async fn one_source_cannot_hold_more_than_its_share_of_connections() {
        let limits = StreamLimits { max_connections: 100, per_source: 2, idle: Duration::from_secs(60) };
        let (t, addr, _rx) = streams(limits).await;
        let mut a = TcpStream::connect(addr).await.expect("a");
        let _b = TcpStream::connect(addr).await.expect("b");
        let mut c = TcpStream::connect(addr).await.expect("c");
        assert!(closed(&mut c).await, "the third connection from one address must be closed");
        assert_eq!(t.refused_connections(), 1);
        assert_eq!(t.open_connections(), 2);
        // a slot freed is a slot usable again
        drop(a.shutdown().await);
        drop(a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut d = TcpStream::connect(addr).await.expect("d");
        d.write_all(b"\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 1];
        assert!(tokio::time::timeout(Duration::from_millis(300), d.read(&mut buf)).await.is_err(), "d should stay open");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed() {
        let limits = StreamLimits { max_connections: 100, per_source: 10, idle: Duration::from_millis(300) };
        let (t, addr, _rx) = streams(limits).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert!(closed(&mut s).await, "an idle connection must be closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(t.open_connections(), 0);
    }
}

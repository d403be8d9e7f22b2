//! Stream connections (TCP and TLS) of [`Transports`]: one table for both, limits in total, per
//! source address and on idle time, TLS handshakes with a deadline, and Content-Length framing of
//! what they carry.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

use super::{Incoming, Proto, TransportEvent, Transports};
use crate::framing::next_frame;

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

pub(super) struct Conns {
    pub(super) by_id: HashMap<u64, mpsc::Sender<Bytes>>,
    pub(super) by_peer: HashMap<(Proto, SocketAddr), u64>,
    /// Inbound connections open per source address.
    pub(super) per_ip: HashMap<IpAddr, u32>,
}

impl Transports {
    pub(super) fn send_stream(self: &Arc<Self>, proto: Proto, peer: SocketAddr, conn: Option<u64>, bytes: Bytes) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let id = conn.filter(|c| conns.by_id.contains_key(c)).or_else(|| conns.by_peer.get(&(proto, peer)).copied());
        if let Some(tx) = id.and_then(|id| conns.by_id.get(&id)) {
            if tx.try_send(bytes).is_err() {
                tracing::warn!(%peer, "stream send queue full or closed; message dropped");
            }
            return;
        }
        let connector = match proto {
            Proto::Tls => self.tls_connector(peer),
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
                    let name = me.tls_server_name(peer);
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
                            let m = Incoming { bytes: frame.freeze(), proto, peer, conn: Some(id), arrived: tokio::time::Instant::now() };
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

pub(super) async fn accept_loop(t: Arc<Transports>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UdpSocket;

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

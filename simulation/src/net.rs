//! turmoil's sockets behind the node's I/O seams: SIP's [`Datagram`], the gRPC server's incoming
//! stream and the consensus [`Dialer`]. Production code never knows it is simulated.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hatrunk_consensus::network::{endpoint, Dialer};
use hatrunk_sip::transport::Datagram;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::Uri;

/// A simulated UDP socket of host `.1`. turmoil sends no ICMP errors, so a dead peer is only ever
/// a timeout.
pub struct SimUdp(pub turmoil::net::UdpSocket, pub String);

thread_local! {
    /// Host pairs (sorted) between which SIP datagrams are dropped while everything else (the
    /// cluster's gRPC) flows: [`crate::scenario::Fault::SipCut`]. turmoil partitions whole hosts.
    static SIP_CUT: RefCell<BTreeSet<(String, String)>> = const { RefCell::new(BTreeSet::new()) };
}

/// Drop SIP between `a` and `b` from now on.
pub fn sip_cut(a: &str, b: &str) {
    SIP_CUT.with(|c| c.borrow_mut().insert(pair(a, b)));
}

/// SIP flows between every pair again (a heal; also at the start of a run).
pub fn sip_heal() {
    SIP_CUT.with(|c| c.borrow_mut().clear());
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Datagram for SimUdp {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (std::io::Result<()>, Vec<SocketAddr>) {
        let cut = SIP_CUT.with(|c| {
            let c = c.borrow();
            !c.is_empty() && turmoil::reverse_lookup(peer.ip()).is_some_and(|to| c.contains(&pair(&self.1, &to)))
        });
        if cut {
            return (Ok(()), Vec::new()); // lost on the way, as a firewall rule on the SIP port would
        }
        sip_trace("out", peer, bytes);
        (self.0.try_send_to(bytes, peer).map(|_| ()), Vec::new())
    }
    /// turmoil hands datagrams over as they arrive: no wait below us.
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, std::time::Duration)> {
        let (n, peer) = self.0.recv_from(buf).await?;
        sip_trace("in", peer, &buf[..n]);
        Ok((n, peer, std::time::Duration::ZERO))
    }
}

/// Every node's SIP datagram as one line (`HATRUNK_SIM_LOG=sim_sip=debug`): the first line, the
/// Call-ID and CSeq, and the simulated time.
fn sip_trace(dir: &str, peer: SocketAddr, bytes: &[u8]) {
    if !tracing::enabled!(target: "sim_sip", tracing::Level::DEBUG) {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or("");
    let h = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").trim().to_string();
    tracing::debug!(target: "sim_sip", t = crate::oracle::now_ms(), dir, %peer, cid = %h("Call-ID:"), cseq = %h("CSeq:"), "{first}");
}

/// A simulated TCP connection the gRPC server can serve.
pub struct SimConn(pub turmoil::net::TcpStream);

impl Connected for SimConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The accepted connections of a simulated listener, as the stream tonic serves.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<SimConn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let r = listener.accept().await.map(|(s, _)| SimConn(s));
            if tx.send(r).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Channels over simulated TCP (connect timeout as in production: 2 s).
pub fn dialer() -> Dialer {
    Arc::new(|addr: &str| {
        let ep = endpoint(addr)?.connect_timeout(std::time::Duration::from_secs(2));
        Ok(ep.connect_with_connector_lazy(tower_service_fn(|uri: Uri| async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let s = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, std::io::Error>(TokioIo::new(s))
        })))
    })
}

/// A tower service from a function (tonic's connector is a `Service<Uri>`).
#[derive(Clone)]
struct ServiceFn<F>(F);

fn tower_service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn(f)
}

impl<F, Fut, T> tower_service::Service<Uri> for ServiceFn<F>
where
    F: FnMut(Uri) -> Fut,
    Fut: Future<Output = Result<T, std::io::Error>>,
{
    type Response = T;
    type Error = std::io::Error;
    type Future = Fut;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, uri: Uri) -> Fut {
        (self.0)(uri)
    }
}

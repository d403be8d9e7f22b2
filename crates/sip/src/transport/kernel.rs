//! The kernel's UDP socket as a [`Datagram`]: ICMP errors read from its error queue
//! (`IP_RECVERR`), and every datagram stamped with the time the kernel received it
//! (`SO_TIMESTAMPNS`), so the node knows how long it sat in the socket buffer before we read it.
//! Under overload that wait is the queue that matters: a deep receive buffer absorbs bursts, but
//! a request that has already waited longer than its caller will is better refused than served.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::Datagram;

/// A kernel UDP socket with ICMP errors reported and receive times stamped.
pub(super) struct KernelUdp(pub(super) UdpSocket);

impl KernelUdp {
    /// Take `sock`, asking the kernel for its error queue (IPv4) and receive timestamps. Without
    /// timestamps every datagram counts as read at once (the engine still sees its own queue).
    pub(super) fn new(sock: UdpSocket) -> io::Result<Self> {
        use nix::sys::socket::{setsockopt, sockopt};
        if sock.local_addr()?.is_ipv4() {
            setsockopt(&sock, sockopt::Ipv4RecvErr, &true).map_err(io::Error::from)?;
        }
        if let Err(e) = setsockopt(&sock, sockopt::ReceiveTimestampns, &true) {
            tracing::warn!(error = %e, "no kernel receive timestamps: time spent in the socket buffer is not seen");
        }
        Ok(KernelUdp(sock))
    }
}

impl Datagram for KernelUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn send(&self, peer: SocketAddr, bytes: &[u8]) -> (io::Result<()>, Vec<SocketAddr>) {
        send_datagram(&self.0, peer, bytes)
    }
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr, Duration)>> + Send {
        // ERROR too: an ICMP error raises only EPOLLERR, and it must wake the reader (as in tokio's recv_from)
        self.0.async_io(Interest::READABLE | Interest::ERROR, move || recv_stamped(&self.0, &mut *buf))
    }
    fn unreachable(&self) -> Vec<SocketAddr> {
        drain_icmp_errors(&self.0)
    }
}

/// One datagram, its sender, and how long it waited in the kernel. A wall-clock step between
/// the stamp and now can make one read look older or newer than it was; it never looks negative.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Duration)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    let mut waited = Duration::ZERO;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let at = UNIX_EPOCH + Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec().clamp(0, 999_999_999) as u32);
                waited = SystemTime::now().duration_since(at).unwrap_or(Duration::ZERO);
            }
        }
    }
    let peer = match msg.address {
        Some(a) => match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => SocketAddr::V4((*v4).into()),
            (_, Some(v6)) => SocketAddr::V6((*v6).into()),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")),
        },
        None => return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram without a sender")),
    };
    Ok((msg.bytes, peer, waited))
}

/// Ask the kernel for a receive buffer of `want` bytes on `sock`; returns what it granted.
pub fn set_recv_buffer(sock: &UdpSocket, want: usize) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt::RcvBuf};
    let _ = setsockopt(sock, RcvBuf, &want);
    // Linux reports twice what it grants (the other half is its own bookkeeping)
    getsockopt(sock, RcvBuf).map(|b| b / 2).unwrap_or(0)
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

    /// The time a datagram sat in the socket buffer before it was read is reported.
    #[tokio::test]
    async fn a_datagram_says_how_long_it_waited_in_the_kernel() {
        let sock = KernelUdp::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")).expect("socket");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // the kernel turns receive timestamps on for the whole stack a moment after the first
        // socket asks (a deferred static key); a node's socket lives long past that moment
        std::thread::sleep(Duration::from_millis(100));
        client.send_to(b"OPTIONS", sock.0.local_addr().expect("addr")).await.expect("send");
        std::thread::sleep(Duration::from_millis(150)); // nobody reads meanwhile
        let mut buf = [0u8; 64];
        let (n, peer, waited) = sock.recv(&mut buf).await.expect("recv");
        assert_eq!((&buf[..n], peer), (&b"OPTIONS"[..], client.local_addr().expect("addr")));
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }

    /// A send to a port with nothing behind it comes back as an error on the next receive,
    /// which names the dead port through the error queue: how failover over UDP is immediate.
    #[tokio::test]
    async fn a_dead_port_is_reported_by_the_next_receive() {
        let sock = KernelUdp::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind")).expect("socket");
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr"); // closed on drop
        sock.0.send_to(b"OPTIONS", dead).await.expect("sent");
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await.expect("the receive wakes up");
        assert_eq!(r.map(|_| ()).map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionRefused));
        assert_eq!(sock.unreachable(), vec![dead]);
    }
}

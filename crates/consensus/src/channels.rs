//! The channels a member keeps to the others for its own requests (writes and reads forwarded to
//! the leader, elections controls): one per address, reused.
//!
//! A channel made per request cost a TCP connection and an HTTP/2 handshake each time: a follower
//! forwarding its lease renewals (two a second) and ledger writes opened and closed a connection
//! for every one, most of an idle member's CPU. A tonic channel multiplexes requests and connects
//! again by itself after its connection breaks (HTTP/2 keepalive closes a silent one about 3 s
//! after its last frame), so keeping it is safe.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::network::Dialer;

/// More addresses than any membership holds: past it the map starts again, so addresses of
/// members long gone do not pile up.
const MAX_ADDRESSES: usize = 64;

pub struct Channels {
    dialer: Dialer,
    /// The member's own runtime: a channel's connection task runs there, whichever runtime asked
    /// first (the SIP thread's admission writes would otherwise carry every later request).
    rt: Handle,
    map: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// Channels made by `dialer`, their tasks on the current runtime.
    pub fn new(dialer: Dialer) -> Channels {
        Channels { dialer, rt: Handle::current(), map: Mutex::default() }
    }

    /// The channel to `addr`, made on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = {
            let _rt = self.rt.enter();
            (self.dialer)(addr)?
        };
        if map.len() >= MAX_ADDRESSES {
            map.clear();
        }
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// How many addresses have a channel.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// One channel per address, made once; a full map starts again rather than growing.
    #[tokio::test]
    async fn one_channel_per_address_made_once() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let dialer: Dialer = Arc::new(move |addr: &str| {
            m.fetch_add(1, Ordering::Relaxed);
            crate::network::channel(addr)
        });
        let ch = Channels::new(dialer);
        for _ in 0..3 {
            ch.get("127.0.0.1:1").expect("a");
            ch.get("127.0.0.1:2").expect("b");
        }
        assert_eq!(made.load(Ordering::Relaxed), 2);
        assert_eq!(ch.len(), 2);
        for p in 0..MAX_ADDRESSES as u16 + 1 {
            ch.get(&format!("127.0.0.1:{}", 100 + p)).expect("c");
        }
        assert!(ch.len() <= MAX_ADDRESSES, "{}", ch.len());
        assert!(ch.get("not an address\n").is_err());
    }
}

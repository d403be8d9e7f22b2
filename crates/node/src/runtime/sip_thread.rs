//! The SIP path's own thread: a single-threaded tokio runtime that owns the SIP sockets, the
//! transports' receive loops and the engine's driver. A datagram read and the engine handling it
//! then hand over inside one thread, with no wake-up of another worker and no cross-thread steal
//! per message: that hand-over was a quarter of a call's CPU on the shared multi-thread runtime
//! (issue 20's profile: task switches and wake-ups). Raft, gRPC, HTTP, and the admissions and
//! registrations the engine asks of the cluster, stay on the main runtime; CDRs have a thread of
//! their own (`cdr.rs`). The engine was one task before; the receive loops now share its core.

use std::io;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The running thread. Dropping it stops the runtime: the engine, the transports' loops and every
/// task they spawned end with it.
pub struct SipThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl SipThread {
    pub fn start() -> io::Result<SipThread> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::sync_channel(1);
        // the runtime is built and dropped on its own thread: a runtime dropped on a worker of
        // another one panics
        std::thread::Builder::new().name("hatrunk-sip".into()).spawn(move || {
            let rt = match Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            if ready.send(Ok(rt.handle().clone())).is_ok() {
                // ends when the sender is dropped
                let _ = rt.block_on(stopped);
            }
        })?;
        let handle = handle.recv().map_err(|_| io::Error::other("the SIP thread ended before its runtime was built"))??;
        Ok(SipThread { handle, _stop: stop })
    }

    /// Where the SIP path's sockets are registered and its tasks spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

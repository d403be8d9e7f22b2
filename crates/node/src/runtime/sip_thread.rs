//! The SIP path's own thread: a single-threaded tokio runtime that owns the SIP sockets, the
//! transports' receive loops and the engine's driver. A datagram read and the engine handling it
//! then hand over inside one thread, with no wake-up of another worker and no cross-thread steal
//! per message: that hand-over was a quarter of a call's CPU on the shared multi-thread runtime
//! (issue 20's profile: task switches and wake-ups). Raft, gRPC, HTTP and the CDR writer stay on
//! the main runtime; the engine is one task either way, so no parallelism is lost.

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
        let rt = Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name("hatrunk-sip".into()).spawn(move || {
            // ends when the sender is dropped; the runtime and its tasks are dropped here, off any
            // async context
            let _ = rt.block_on(stopped);
        })?;
        Ok(SipThread { handle, _stop: stop })
    }

    /// Where the SIP path's sockets are registered and its tasks spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

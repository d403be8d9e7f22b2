//! The engine's timers: what each kind does when it fires (the kinds and their heaps are in
//! `output.rs`), and the upkeep done on every tick (published state, expired registrations, tables
//! trimmed after a burst).

use super::context::cx;
use super::output::{CallTimer, Due, TimerKey};
use super::Engine;

impl Engine {
    /// When the next timer is due (ms), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.io.next_deadline()
    }

    /// Fire every timer due at `now`.
    pub fn on_tick(&mut self, now: u64) {
        self.now = now;
        while let Some(due) = self.io.pop_due(now) {
            match due {
                Due::Keyed(key) => self.fire(key),
                Due::Call(id, t) => self.fire_call(id, t),
            }
        }
        self.publish();
    }

    fn fire_call(&mut self, id: u64, t: CallTimer) {
        match t {
            CallTimer::Failover(n) => self.calls.attempt_no_answer(&mut cx!(self), id, n as usize, false),
            CallTimer::TimerC(n) => self.calls.attempt_no_answer(&mut cx!(self), id, n as usize, true),
            CallTimer::Forward(n) => self.calls.forward_timer(&mut cx!(self), id, n as usize),
            CallTimer::MaxDuration => self.calls.dialog_expired(&mut cx!(self), id),
            CallTimer::HeldSlot => self.calls.release_held(&mut cx!(self), id),
            CallTimer::SecondSlot(n) => self.calls.second_expired(&mut cx!(self), id, n as usize),
            CallTimer::NextTarget(n) => self.calls.target_silent(&mut cx!(self), id, n as usize),
            CallTimer::SessionExpired => self.calls.session_due(&mut cx!(self), id),
        }
    }

    fn fire(&mut self, key: TimerKey) {
        match key {
            TimerKey::Server(k, t) => self.tx.server_timer(&k, t, self.now, &mut self.io),
            TimerKey::Client(b, t) => {
                for f in self.tx.client_timer(&b, t) {
                    self.client_effect(&b, f);
                }
            }
            TimerKey::Probe(t, r) => self.probe_due(&t, r),
            TimerKey::CatchUp => self.catch_up_due(),
        }
    }

    /// Push live state (registrations, health, calls) where the admin API and metrics read it.
    fn publish(&mut self) {
        self.status.set_calls_in_progress(self.calls.len());
        self.metrics.transactions.with_label_values(&["server"]).set(self.tx.servers.len() as i64);
        self.metrics.transactions.with_label_values(&["client"]).set(self.tx.clients.len() as i64);
        for user in self.registrar.expire(self.now) {
            // what `trunk get` shows: the binding is gone here (another node's is read from the
            // replicated state, which carries its own expiry)
            if let Some((trunk, role)) = self.store.by_username(&user) {
                self.status.set_registration(&trunk.id, role, None);
            }
        }
        for flow in self.registrar.keepalives_due(self.now, self.cfg.nat_keepalive_ms) {
            // RFC 5626 section 3.5.1: a double CRLF, which every SIP peer ignores
            self.io.send(flow, bytes::Bytes::from_static(b"\r\n\r\n"));
        }
        self.sweep_guard();
        self.shrink_tables();
    }

    /// Tables keep the capacity of their busiest moment; a burst of call set-ups (64,000 transactions
    /// alive at 2,000 calls/s for their 32 s) would otherwise hold that memory for good.
    fn shrink_tables(&mut self) {
        self.tx.shrink();
        self.io.shrink();
        self.calls.shrink();
    }
}

//! Forwarded INVITEs for a number this member does not know. The ingress member routed the call
//! by a trunk it had applied, so one of the two copies of the trunks is behind, and the forward
//! says which: it carries the Raft index the ingress had applied (`forward_sig::applied_of`).
//!
//! - This member has applied as far or further: the number is gone (deleted since the ingress
//!   looked; one moved to another trunk is found under it), and the answer is the number's: 404
//!   at once.
//! - This member is behind (a trunk applied a moment ago, which followers apply on the next
//!   AppendEntries; a member catching up after a restart): the INVITE waits until it has applied
//!   as far, up to [`CATCH_UP_MS`], instead of a 404 that the ingress would pass to the carrier as
//!   the number's answer (e2e_ha, 2026-12-01: the third call after `trunk apply` got 404 from the
//!   egress member in the other zone). Then it is routed, or 404 if the number went meanwhile.
//!
//! A member still behind after the wait (or with [`MAX_PARKED`] already waiting) answers 503 with
//! no egress report, on which the ingress moves the call to the next node, as for any member
//! refusing it. A forward from a member of the release before carries no index: it waits for the
//! number itself, and a number that is gone is refused with that 503 after the wait.

use hatrunk_core::cdr::Direction;
use hatrunk_sip::transaction::TxKey;
use hatrunk_sip::SipMessage;

use super::context::cx;
use super::output::TimerKey;
use super::{Engine, Src};

/// How long a forwarded INVITE waits for its trunk: several Raft heartbeats (150 ms), well inside
/// the ingress's failover timer.
pub(super) const CATCH_UP_MS: u64 = 1000;
/// How often waiting INVITEs look again.
const POLL_MS: u64 = 20;
/// INVITEs waiting at once at most; past it the next is answered 503 at once.
const MAX_PARKED: usize = 256;

/// Why this member refused a forward: the ingress moves it on (no egress report).
pub(super) const NOT_HERE: &str = "SIP;cause=503;text=\"Trunk not applied on this member yet\"";

pub(super) struct Parked {
    key: TxKey,
    msg: SipMessage,
    src: Src,
    /// The ingress member's name.
    from: String,
    number: String,
    /// How far the ingress's state had come; none from a member of the release before.
    seen: Option<u64>,
    until: u64,
}

/// The INVITEs waiting for their trunk, oldest first.
#[derive(Default)]
pub(super) struct CatchUp {
    parked: Vec<Parked>,
    /// A poll is armed (one for all, whatever CANCELs emptied the list meanwhile).
    polling: bool,
}

impl Engine {
    /// A forwarded INVITE for `number`, which this member does not know; `seen` is how far the
    /// ingress `from` had applied.
    pub(super) fn unknown_forward(&mut self, key: TxKey, msg: SipMessage, src: Src, from: String, number: String, seen: Option<u64>) {
        // the index first, then the number again: the index only grows, so a batch applied
        // between the caller's look and this one cannot make a number it added look gone
        let here = self.store.applied();
        if let Some(trunk) = self.store.by_number(&number) {
            return self.calls.new_call(&mut cx!(self), key, msg, src, trunk, Direction::Inbound, None, number, Some(from));
        }
        if caught_up(seen, here) {
            tracing::debug!(number, ingress = from, "forwarded INVITE for a number gone here and at the ingress's index: 404");
            return self.respond_key(&key, 404, None);
        }
        if self.catch_up.parked.len() >= MAX_PARKED {
            return self.respond_key(&key, 503, Some(NOT_HERE));
        }
        if !self.catch_up.polling {
            self.catch_up.polling = true;
            self.io.arm(self.now + POLL_MS, TimerKey::CatchUp);
        }
        tracing::debug!(number, ingress = from, "forwarded INVITE for a trunk not applied here yet: waiting for it");
        self.catch_up.parked.push(Parked { key, msg, src, from, number, seen, until: self.now + CATCH_UP_MS });
    }

    /// The poll: route what is known now, 404 what is gone, refuse what waited out, look again
    /// while any waits.
    pub(super) fn catch_up_due(&mut self) {
        self.catch_up.polling = false;
        let here = self.store.applied(); // before the numbers (see `unknown_forward`)
        for p in std::mem::take(&mut self.catch_up.parked) {
            if !self.tx.servers.contains_key(&p.key) {
                continue; // its transaction is gone
            }
            match self.store.by_number(&p.number) {
                Some(trunk) => {
                    let Parked { key, msg, src, from, number, .. } = p;
                    self.calls.new_call(&mut cx!(self), key, msg, src, trunk, Direction::Inbound, None, number, Some(from));
                }
                None if caught_up(p.seen, here) => self.respond_key(&p.key, 404, None),
                None if self.now >= p.until => {
                    tracing::warn!(
                        number = p.number,
                        ingress = p.from,
                        waited_ms = CATCH_UP_MS,
                        "forwarded INVITE for a trunk this member still does not have: 503, the ingress moves it on"
                    );
                    self.respond_key(&p.key, 503, Some(NOT_HERE));
                }
                None => self.catch_up.parked.push(p),
            }
        }
        if !self.catch_up.parked.is_empty() {
            self.catch_up.polling = true;
            self.io.arm(self.now + POLL_MS, TimerKey::CatchUp);
        }
    }

    /// The ingress CANCELled a waiting INVITE (its caller hung up): 487 it. False if none waited.
    pub(super) fn cancel_parked(&mut self, invite_key: &TxKey) -> bool {
        let Some(i) = self.catch_up.parked.iter().position(|p| p.key == *invite_key) else {
            return false;
        };
        let p = self.catch_up.parked.remove(i);
        self.respond_key(&p.key, 487, None);
        true
    }
}

/// Whether a member at applied index `here` has applied all the ingress had (`seen`) when it
/// forwarded.
fn caught_up(seen: Option<u64>, here: u64) -> bool {
    seen.is_some_and(|n| here >= n)
}

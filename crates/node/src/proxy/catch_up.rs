//! Forwarded INVITEs for a number this member does not know yet. The ingress member routed the
//! call by a trunk it had applied, so the trunk is in the committed state and only this member's
//! copy is behind: a trunk applied a moment ago (followers apply it on the next AppendEntries), or a
//! member catching up after a restart. The INVITE waits for it, up to [`CATCH_UP_MS`], instead of
//! a 404 that the ingress would pass to the carrier as the number's answer (e2e_ha, 2026-12-01: the
//! third call after `trunk apply` got 404 from the egress member in the other zone). A member still
//! without it after the wait answers 503 with no egress report, on which the ingress moves the call
//! to the next node, as for any member refusing it.
//!
//! The wait assumes the ingress is the side ahead. When it is the one behind (the number was
//! deleted or moved a moment ago and the ingress has not applied that yet), a current egress now
//! answers 503 after the wait instead of a 404 at once, and the ingress tries the next node: calls
//! to a number in the heartbeat after its deletion take longer to be refused. Carrying the
//! ingress's applied index with the forward would tell the two apart; not done yet.

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
    /// Let the forwarded INVITE `key` for `number` wait for its trunk; false (and nothing kept)
    /// when too many already wait.
    pub(super) fn park_for_trunk(&mut self, key: TxKey, msg: SipMessage, src: Src, from: String, number: String) -> bool {
        if self.catch_up.parked.len() >= MAX_PARKED {
            return false;
        }
        if !self.catch_up.polling {
            self.catch_up.polling = true;
            self.io.arm(self.now + POLL_MS, TimerKey::CatchUp);
        }
        tracing::debug!(number, ingress = from, "forwarded INVITE for a trunk not applied here yet: waiting for it");
        self.catch_up.parked.push(Parked { key, msg, src, from, number, until: self.now + CATCH_UP_MS });
        true
    }

    /// The poll: route what is known now, refuse what waited out, look again while any waits.
    pub(super) fn catch_up_due(&mut self) {
        self.catch_up.polling = false;
        for p in std::mem::take(&mut self.catch_up.parked) {
            if !self.tx.servers.contains_key(&p.key) {
                continue; // its transaction is gone
            }
            match self.store.by_number(&p.number) {
                Some(trunk) => {
                    let Parked { key, msg, src, from, number, .. } = p;
                    self.calls.new_call(&mut cx!(self), key, msg, src, trunk, Direction::Inbound, None, number, Some(from));
                }
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

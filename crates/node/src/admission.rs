//! Admission: taking and giving back slots of a trunk's shared pool. The call path sees only the
//! [`Admission`] trait. [`EscrowAdmission`] admits from this node's escrow share of the pool
//! (`hatrunk_core::escrow`): no consensus round trip per call, one Raft write per batch of slots,
//! and the replicated ledger keeps the shares within each trunk's limit. See docs/consensus.md for
//! why, and what a partitioned node may still do.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use hatrunk_consensus::raft::Consensus;
use hatrunk_consensus::{Command, CommandResult};
use hatrunk_core::cps::{rate_trunk, TOKEN_MS};
use hatrunk_core::escrow::{Escrow, Take};
use hatrunk_core::pool::Decision;
use hatrunk_core::slot::SlotId;

use crate::error::NodeError;
use crate::store::{outcome, BoxFuture};

mod inherited;
pub mod lease;
mod renew;
mod starved;
use inherited::Inherited;
use lease::LeaseClock;
pub use lease::NoLease;

pub trait Admission: Send + Sync {
    /// Decide at once when no ledger write is needed (the call path then skips a task and a
    /// channel); `None` means "use [`Admission::admit`]".
    fn admit_now(&self, trunk: &str, limit: u32, call: &SlotId) -> Option<Decision>;
    /// Take a slot of `trunk` for `call` (idempotent per call), asking the ledger for more when
    /// needed. The replicated trunk's limit is the one enforced; `limit` is what the caller saw.
    fn admit(&self, trunk: String, limit: u32, call: SlotId) -> BoxFuture<'_, Result<Decision, NodeError>>;
    /// Give `call`'s slot back (harmless if it holds none).
    fn release(&self, call: &SlotId);
    /// A BYE passed through for a call an earlier life of this node admitted on `trunk`: one of
    /// the slots kept for those calls may go (see `admission/inherited.rs`).
    fn release_inherited(&self, _trunk: &str, _call_id: &str) {}
    /// Slots held per trunk, as this node's applied state sees them.
    fn usage(&self) -> Vec<(String, u32)>;
    /// What the ledger holds of `trunk` for each node (its share, reserve included, and its
    /// calls' own slots), by node name.
    fn usage_by_node(&self, _trunk: &str) -> Vec<(String, u32)> {
        Vec::new()
    }
    /// The admission lease's state (`lease::STATES`), for `hatrunk_admission_lease`; none on a
    /// node that takes no calls.
    fn lease_state(&self) -> Option<&'static str> {
        None
    }
    /// How long this node's recent ledger writes (share grants) took, a moving average in
    /// microseconds, for `hatrunk_ledger_write_seconds`; none if none was answered in the last
    /// minute.
    fn ledger_write_us(&self) -> Option<u64> {
        None
    }
}

/// Refills one admission may try (each after a wait that ended on a change): a bound, not a
/// schedule.
const MAX_ASKS: u32 = 4;
/// After the ledger had no rate token for this node, calls over the rate are refused locally for
/// this long (a tidy round) instead of each asking the ledger: three callers at 3x a limit of 10 made
/// a ledger write per refused call, five with the slot path's retries, and admissions queued past
/// 4 s. Meanwhile the others see this node starved and give back their unused tokens.
const DRY_MS: u64 = 50;
/// How often a node gives back what it does not need.
pub const TIDY_EVERY: Duration = Duration::from_millis(50);
/// Without a new call for this long a node keeps no reserve.
const IDLE_MS: u64 = 1000;
/// The longest a background ledger write (a shrink, an ended call) may hold the ledger lock: one
/// stuck on a leader that cannot answer would otherwise hold up renewals for a minute; it is
/// retried on the next round instead.
const BACKGROUND_WRITE: Duration = Duration::from_secs(2);

/// Admission from this node's escrow share.
pub struct EscrowAdmission {
    consensus: Arc<Consensus>,
    node: String,
    escrow: Mutex<Escrow>,
    /// One ledger write of this node at a time (a shrink must never cross a grant in flight).
    ledger: tokio::sync::Mutex<Resync>,
    reconciled: tokio::sync::OnceCell<()>,
    t0: Instant,
    /// Shares kept for the calls of this node's previous life.
    inherited: Mutex<Inherited>,
    /// This process's boot epoch, given by the ledger at reconcile; every share change carries it.
    epoch: std::sync::atomic::AtomicU64,
    /// Until when this node may admit.
    lease: LeaseClock,
    /// When this process booted (its `now_ms`; 0 until then): no rate tokens in the second after.
    booted_ms: std::sync::atomic::AtomicU64,
    /// Rate pools the ledger had no token of for us, until when (see [`DRY_MS`]).
    dry: Mutex<std::collections::HashMap<String, u64>>,
    /// Slot pools the ledger had no room of for us (see `admission/starved.rs`).
    starved: starved::Starved,
    /// Woken when a call ended here or the ledger granted this node more: calls waiting for room
    /// look again, and so does the tidy task (`admission/starved.rs`).
    changed: tokio::sync::Notify,
    /// Every member watches every lease; the leader acts on what it saw.
    watch: Mutex<hatrunk_consensus::lease::Watch>,
    /// A SIP node takes calls and so needs a lease; a witness only watches.
    takes_calls: bool,
    /// What the leader writes of the watch's due commands (see [`crate::runtime::LeaseLayer`]).
    lease_layer: Option<crate::runtime::LeaseLayer>,
}

/// An admission being decided: counted in the escrow (what a starved node may be given leaves
/// it out) for as long as it runs, however it ends (one abandoned after the driver's budget is
/// dropped mid-wait).
struct Asking<'a> {
    admission: &'a EscrowAdmission,
    trunk: &'a str,
}

impl<'a> Asking<'a> {
    fn new(admission: &'a EscrowAdmission, trunk: &'a str) -> Self {
        admission.escrow().asking(trunk);
        Asking { admission, trunk }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.admission.escrow().asked(self.trunk);
    }
}

/// What this node's applied state says about one trunk's ledger.
struct LedgerView {
    limit: u32,
    /// Every share plus per-call slots.
    held: u32,
    /// What the other nodes hold (and could give back).
    others_reserve: u32,
    others_starved: bool,
    mine: u32,
}

impl LedgerView {
    /// The ledger holds more than the limit (it was lowered): no reserve may be used.
    fn over(&self) -> bool {
        self.held > self.limit
    }

    /// What the ledger could still grant.
    fn free(&self) -> u32 {
        self.limit.saturating_sub(self.held)
    }
}

/// Trunks whose last ledger write went unanswered: the ledger may hold more for us than we use.
#[derive(Default)]
struct Resync(std::collections::BTreeSet<String>);

impl EscrowAdmission {
    pub fn new(consensus: Arc<Consensus>, node: String, takes_calls: bool) -> Self {
        EscrowAdmission {
            consensus,
            node,
            escrow: Mutex::new(Escrow::leased()),
            ledger: tokio::sync::Mutex::new(Resync::default()),
            reconciled: tokio::sync::OnceCell::new(),
            t0: Instant::now(),
            inherited: Mutex::new(Inherited::default()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            lease: LeaseClock::default(),
            booted_ms: std::sync::atomic::AtomicU64::new(0),
            dry: Mutex::new(Default::default()),
            starved: Default::default(),
            changed: Default::default(),
            watch: Mutex::new(Default::default()),
            takes_calls,
            lease_layer: None,
        }
    }

    /// Filter the lease watch's writes through `layer` (the simulation's broken builds only).
    pub fn with_lease_layer(mut self, layer: Option<crate::runtime::LeaseLayer>) -> Self {
        self.lease_layer = layer;
        self
    }

    fn inherited(&self) -> std::sync::MutexGuard<'_, Inherited> {
        self.inherited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Monotonic milliseconds since this admission started (simulated time in the simulation):
    /// nothing here may move when the wall clock is stepped.
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn escrow(&self) -> std::sync::MutexGuard<'_, Escrow> {
        self.escrow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take over what this node held before it (re)started: the calls it set up are still up at
    /// the carrier and the PBX, so their slots stay taken until their BYEs pass through or the
    /// longest call could have ended. The same ledger write gives this process its boot epoch,
    /// which fences every share change of the earlier ones. Done once, before the first admission.
    pub async fn reconcile(&self) -> Result<(), NodeError> {
        self.reconciled
            .get_or_try_init(|| async {
                let (epoch, held) = match outcome(self.consensus.write(Command::Boot { node: self.node.clone() }).await?)? {
                    CommandResult::Booted { epoch, held } => (epoch, held),
                    other => return Err(NodeError::Refused(format!("unexpected boot result {other:?}"))),
                };
                self.epoch.store(epoch, std::sync::atomic::Ordering::Release);
                let now = self.now_ms();
                self.booted_ms.store(now.max(1), std::sync::atomic::Ordering::Release);
                let until = |trunk: &str| {
                    let max_s = self.consensus.local(|s| s.trunks.get(trunk).map(|t| t.max_call_duration_s));
                    now + u64::from(max_s.unwrap_or(hatrunk_core::trunk::DEFAULT_MAX_CALL_DURATION_S)) * 1000
                };
                tracing::info!(node = %self.node, epoch, ?held, "booted: slots of earlier runs kept for their calls");
                self.inherited().take_over(held, until);
                // the first lease, so the first call need not wait for the next tidy round
                let mut resync = self.ledger.lock().await;
                self.renew_locked(&mut resync).await;
                Ok::<(), NodeError>(())
            })
            .await
            .map(|_| ())
    }

    /// Send the ends of earlier runs' calls seen since the last round; the ledger counts each
    /// call once, and only then does the kept count go down.
    async fn give_back_ended(&self) {
        let ended = self.inherited().take_pending();
        for (trunk, call) in ended {
            let cmd = Command::EndInherited { node: self.node.clone(), trunk: trunk.clone(), call: call.clone(), epoch: self.epoch() };
            match self.consensus.write_within(cmd, BACKGROUND_WRITE).await.map_err(NodeError::from).and_then(outcome) {
                Ok(CommandResult::Ended(true)) => {
                    tracing::debug!(%trunk, call_id = %call, "a previous run's call ended; its slot went back");
                    self.inherited().gave_back(&trunk);
                }
                Ok(_) => {}
                Err(NodeError::Refused(why)) => tracing::warn!(%trunk, call_id = %call, %why, "end of an earlier call refused"),
                Err(e) => {
                    tracing::debug!(%trunk, call_id = %call, error = %e, "end of an earlier call not recorded yet");
                    self.inherited().retry(trunk, call);
                }
            }
        }
    }

    fn ledger_view(&self, trunk: &str) -> LedgerView {
        self.consensus.local(|s| {
            let limit = s.limit_of(trunk).unwrap_or(0);
            let held = s.held(trunk);
            LedgerView {
                limit,
                held,
                others_reserve: s.shares.total(trunk) - s.shares.share(trunk, &self.node),
                others_starved: s.shares.starved_by_other(trunk, &self.node),
                mine: s.shares.share(trunk, &self.node),
            }
        })
    }

    /// A rate token may be taken now: this process booted [`TOKEN_MS`] ago and its lease lasts
    /// [`TOKEN_MS`] more (see `hatrunk_core::cps`).
    fn may_take_tokens(&self) -> bool {
        let now = self.now_ms();
        let booted = self.booted_ms.load(std::sync::atomic::Ordering::Acquire);
        booted > 0 && now >= booted + TOKEN_MS && self.lease.check(now + TOKEN_MS).is_ok()
    }

    fn take(&self, trunk: &str, limit: u32, call: &str) -> Take {
        let over = self.ledger_view(trunk).over();
        let now = self.now_ms();
        self.escrow().take(trunk, call, limit, over, now)
    }

    /// Ask the ledger for `want` more of `trunk`. True when a new try may succeed: something was
    /// granted, or a grant to a concurrent admission landed while this one waited for the ledger.
    async fn refill(&self, trunk: &str, call: &str, want: u32) -> Result<bool, NodeError> {
        // the ledger has nothing and already knows we want some: another write would change
        // nothing, and the answer needs no place in the queue for the ledger lock, behind a
        // renewal or a round of shrinks (rate pools ask each time: their refusals open no window,
        // see `DRY_MS`)
        let rated = rate_trunk(trunk).is_some();
        let nothing = || {
            let v = self.ledger_view(trunk);
            !rated && v.free() == 0 && self.consensus.local(|s| s.shares.is_starved(trunk, &self.node))
        };
        if nothing() && !self.escrow().has_share(trunk, false) {
            return Ok(false);
        }
        let mut resync = self.ledger.lock().await;
        let v = self.ledger_view(trunk);
        let over = v.over();
        // beyond one batch, no more than is free: a partial grant marks this node starved
        let want = want.min(v.free().max(hatrunk_core::escrow::batch(v.limit)));
        {
            let e = self.escrow();
            if e.holds(call) || e.has_share(trunk, over) {
                return Ok(true);
            }
        }
        if nothing() {
            return Ok(false);
        }
        let cmd = Command::ReserveAt { trunk: trunk.to_string(), node: self.node.clone(), want, epoch: self.epoch() };
        let sent = Instant::now();
        let r = self.consensus.write(cmd).await;
        if r.is_ok() {
            // a failed write says nothing of the ledger's round trip; an answered one counts as
            // long as the caller waited for it, retries included
            self.starved.note_write(sent.elapsed().as_micros().try_into().unwrap_or(u64::MAX), self.now_ms());
        }
        match r {
            Ok(r) => match outcome(r)? {
                CommandResult::Reserved(g) => {
                    self.escrow().credit(trunk, g);
                    if g < want && !rated {
                        self.starved.short(trunk, self.now_ms());
                    }
                    if g > 0 {
                        self.changed.notify_waiters();
                    }
                    Ok(g > 0)
                }
                other => Err(NodeError::Refused(format!("unexpected reserve result {other:?} for trunk {trunk}"))),
            },
            Err(e) => {
                resync.0.insert(trunk.to_string()); // it may have been granted after all
                Err(e.into())
            }
        }
    }

    /// Ask the ledger for `want` more of `trunk` ahead of need (the caller holds the ledger lock).
    /// False when the write's fate is unknown (the ledger is then resynchronised).
    async fn top_up(&self, trunk: &str, want: u32) -> bool {
        let cmd = Command::ReserveAt { trunk: trunk.to_string(), node: self.node.clone(), want, epoch: self.epoch() };
        match self.consensus.write_within(cmd, BACKGROUND_WRITE).await {
            Ok(CommandResult::Reserved(g)) => {
                self.escrow().credit(trunk, g);
                if g > 0 {
                    self.changed.notify_waiters();
                }
                true
            }
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(%trunk, error = %e, "reserve not topped up yet");
                false
            }
        }
    }

    /// Give back what this node does not need, and repair the ledger after unanswered writes.
    /// Run every [`TIDY_EVERY`].
    pub async fn tidy(&self) {
        self.keep_leases().await;
        if self.reconciled.get().is_none() || !self.takes_calls {
            return;
        }
        let mut resync = self.ledger.lock().await;
        if self.lease.due(self.now_ms()) {
            self.renew_locked(&mut resync).await;
        }
        let mut trunks = self.escrow().trunks();
        trunks.extend(resync.0.iter().cloned());
        self.give_back_ended().await;
        let expired = self.inherited().expire(self.now_ms());
        if expired {
            tracing::info!(node = %self.node, "slots kept for the previous run's calls given back: their longest duration has passed");
        }
        // a mark nobody here needs any more: the others may keep their reserve again (not a rate
        // pool's, whose refusals are not counted here; not a deleted trunk's, which the ledger
        // keeps with its shares)
        let (mine, starved): (Vec<String>, Vec<String>) = self.consensus.local(|s| {
            let starved = s.shares.starved_of(&self.node).into_iter().filter(|t| rate_trunk(t).is_none() && s.limit_of(t).is_some());
            (s.shares.trunks_of(&self.node), starved.collect())
        });
        // the ledger's trunks of ours include those of inherited slots: their share stays there
        trunks.extend(mine);
        for trunk in starved {
            if self.starved.quiet(&trunk, self.now_ms()) {
                // once a quiet second, whatever the answer (a fenced process is refused every time)
                self.starved.cleared(&trunk, self.now_ms());
                self.top_up(&trunk, 0).await;
            }
        }
        trunks.sort();
        trunks.dedup();
        for trunk in trunks {
            let v = self.ledger_view(&trunk);
            let now = self.now_ms();
            let (give, top, usable) = {
                let mut e = self.escrow();
                let give = e.surplus(&trunk, v.limit, v.others_starved, v.over(), now, IDLE_MS);
                let top = if give == 0 { e.shortfall(&trunk, v.limit, v.others_starved, v.over(), now, IDLE_MS) } else { 0 };
                (give, top, e.usable(&trunk))
            };
            // the share is what new calls may use plus what the previous life's calls still hold
            let usable = usable + self.inherited().count(&trunk);
            let settled = give == 0 && v.mine <= usable && !resync.0.contains(&trunk);
            // ahead of need only what an admission could ask for now (a live lease), and only
            // while the ledger agrees with this node: a shrink decided on the usable from before
            // a top-up would leave the ledger below what the node may use (simulation seed
            // 3500113). No more than is free: a partial grant would mark this node starved, and
            // every other node would then give back all its spare.
            let top = top.min(v.free());
            if top > 0 && settled && rate_trunk(&trunk).is_none() && self.lease.check(now).is_ok() {
                if !self.top_up(&trunk, top).await {
                    resync.0.insert(trunk.clone()); // it may have been granted after all
                }
                continue;
            }
            if settled {
                continue;
            }
            let cmd = Command::ShrinkAt { trunk: trunk.clone(), node: self.node.clone(), to: usable, epoch: self.epoch() };
            match self.consensus.write_within(cmd, BACKGROUND_WRITE).await {
                Ok(CommandResult::Fenced { epoch, current, .. }) => {
                    tracing::error!(node = %self.node, epoch, current, "a newer process of this node runs: this one's share changes are refused");
                    resync.0.remove(&trunk);
                }
                Ok(_) => {
                    resync.0.remove(&trunk);
                }
                Err(e) => {
                    tracing::debug!(%trunk, error = %e, "share not given back yet");
                    resync.0.insert(trunk);
                }
            }
        }
    }
}

impl Admission for EscrowAdmission {
    fn admit_now(&self, trunk: &str, limit: u32, call: &SlotId) -> Option<Decision> {
        self.reconciled.get()?;
        if rate_trunk(trunk).is_some() && !self.may_take_tokens() && !self.escrow().holds(call.as_str()) {
            return Some(Decision::Full { used: 0, limit });
        }
        if self.lease.check(self.now_ms()).is_err() {
            // a retried admission of a call already admitted is still answered without a lease
            return self.escrow().holds(call.as_str()).then_some(Decision::AlreadyHeld);
        }
        match self.take(trunk, limit, call.as_str()) {
            Take::Taken => Some(Decision::Granted),
            Take::Held => Some(Decision::AlreadyHeld),
            Take::Need { .. } | Take::Capped => None,
        }
    }

    fn admit(&self, trunk: String, limit: u32, call: SlotId) -> BoxFuture<'_, Result<Decision, NodeError>> {
        Box::pin(async move {
            let call = call.as_str();
            let _asking = Asking::new(self, &trunk);
            self.reconcile().await?;
            let mut asks = 0;
            let mut renewals = 0;
            let rated = rate_trunk(&trunk).is_some();
            loop {
                let dry = || self.dry.lock().unwrap_or_else(|p| p.into_inner()).get(&trunk).is_some_and(|until| *until > self.now_ms());
                if rated && (!self.may_take_tokens() || dry()) && !self.escrow().holds(call) {
                    return Ok(Decision::Full { used: 0, limit });
                }
                if let Err(why) = self.lease.check(self.now_ms()) {
                    if self.escrow().holds(call) {
                        return Ok(Decision::AlreadyHeld);
                    }
                    tracing::debug!(%trunk, ?why, "no admission lease: call refused");
                    return Err(NodeError::Consensus(hatrunk_consensus::ConsensusError::Unavailable(format!(
                        "this node may not admit calls ({why:?}): {}",
                        why.hint()
                    ))));
                }
                let want = match self.take(&trunk, limit, call) {
                    Take::Taken => return Ok(Decision::Granted),
                    Take::Held => return Ok(Decision::AlreadyHeld),
                    Take::Capped if renewals < 3 => {
                        tracing::debug!(%trunk, call_id = %call, "admission capped by the lease: renewing first");
                        renewals += 1;
                        self.renew_for(&trunk).await;
                        continue;
                    }
                    Take::Capped => {
                        let v = self.ledger_view(&trunk);
                        return Ok(Decision::Full { used: v.held, limit: v.limit });
                    }
                    Take::Need { want } => want,
                };
                if !rated {
                    // the ledger just turned this trunk down here: wait with that call, not ask again
                    if let Some(until) = self.starved.open_until(&trunk, self.now_ms()) {
                        if self.ledger_view(&trunk).free() == 0 {
                            if self.wait_for_room(&trunk, until).await {
                                continue;
                            }
                            let v = self.ledger_view(&trunk);
                            return Ok(Decision::Full { used: v.held, limit: v.limit });
                        }
                    }
                }
                if asks >= MAX_ASKS {
                    let v = self.ledger_view(&trunk);
                    return Ok(Decision::Full { used: v.held, limit: v.limit });
                }
                tracing::debug!(%trunk, call_id = %call, want, "share dry: asking the ledger");
                asks += 1;
                if self.refill(&trunk, call, want).await? {
                    continue;
                }
                let v = self.ledger_view(&trunk);
                if rated {
                    // no waiting for tokens: a call over the rate is refused now, as a caller expects
                    self.dry.lock().unwrap_or_else(|p| p.into_inner()).insert(trunk.clone(), self.now_ms() + DRY_MS);
                    return Ok(Decision::Full { used: v.held, limit: v.limit });
                }
                // nothing free: wait for others to give back their reserve, unless nobody has one
                if v.others_reserve == 0 {
                    return Ok(Decision::Full { used: v.held, limit: v.limit });
                }
                let until = self.starved.short(&trunk, self.now_ms());
                let (in_use, usable, cap) = {
                    let e = self.escrow();
                    (e.in_use(&trunk), e.usable(&trunk), e.cap(&trunk))
                };
                tracing::debug!(
                    %trunk, call_id = %call, wait_ms = until.saturating_sub(self.now_ms()), held = v.held, mine = v.mine, in_use, usable, cap,
                    "ledger full: waiting for the others' spare"
                );
                if self.wait_for_room(&trunk, until).await {
                    tracing::debug!(%trunk, call_id = %call, "room came while waiting");
                    continue;
                }
                let v = self.ledger_view(&trunk);
                return Ok(Decision::Full { used: v.held, limit: v.limit });
            }
        })
    }

    fn release(&self, call: &SlotId) {
        // a wake only for someone who may use the slot: a call waiting here, or (through the tidy
        // task) a starved node; not one per call end otherwise
        if self.escrow().release(call.as_str())
            && (self.starved.waiting() || self.consensus.local(|s| s.shares.any_starved_but(&self.node)))
        {
            self.changed.notify_waiters();
        }
    }

    fn release_inherited(&self, trunk: &str, call_id: &str) {
        if self.inherited().ended(trunk, call_id) {
            tracing::debug!(trunk, call_id, "a previous run's call ended; its slot goes back once the ledger counts it");
        }
    }

    /// Slots held per trunk across the cluster: every node's share plus per-call slots. A node's
    /// share is its calls in progress plus a reserve it gives back within about a second of
    /// its last call, so once calls end this settles to the calls in progress.
    fn usage(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self.consensus.local(|s| {
            let mut m: std::collections::BTreeMap<String, u32> = s.pool.usage().map(|(t, n)| (t.to_string(), n)).collect();
            for (t, n) in s.shares.totals().filter(|(t, _)| rate_trunk(t).is_none()) {
                *m.entry(t.to_string()).or_default() += n;
            }
            m.into_iter().collect()
        });
        v.sort();
        v
    }

    fn lease_state(&self) -> Option<&'static str> {
        self.takes_calls.then(|| self.lease.state(self.now_ms()))
    }

    fn ledger_write_us(&self) -> Option<u64> {
        self.starved.write_us(self.now_ms())
    }

    fn usage_by_node(&self, trunk: &str) -> Vec<(String, u32)> {
        self.consensus.local(|s| {
            let mut m: std::collections::BTreeMap<String, u32> = s.shares.of_trunk(trunk).map(|(n, v)| (n.to_string(), v)).collect();
            for call in s.pool.holders_of(trunk) {
                let node = call.split('/').next().unwrap_or(call);
                *m.entry(node.to_string()).or_default() += 1;
            }
            m.into_iter().filter(|(_, n)| *n > 0).collect()
        })
    }
}

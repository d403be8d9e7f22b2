//! What really happened, as the simulated carrier, PBXes and operator saw it: every call's life
//! from both ends, configuration acknowledgements, faults. The invariants judge the cluster from
//! this record only, never from the cluster's own counters. Every entry also goes into the trace
//! whose hash identifies a run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// Simulated milliseconds since the run started.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Which PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pbx {
    Primary,
    Secondary,
}

impl Pbx {
    /// Its simulated host.
    pub fn host(self) -> &'static str {
        match self {
            Pbx::Primary => "pbx-p",
            Pbx::Secondary => "pbx-s",
        }
    }
}

/// One INVITE as a PBX saw it.
#[derive(Debug, Clone, Default)]
pub struct Leg {
    pub invite_ms: u64,
    /// The PBX's To tag (one Call-ID may reach a PBX through several nodes: one dialog each).
    pub tag: String,
    /// The hatrunk node it came from (top Via).
    pub egress: String,
    /// Final response sent: (when, code).
    pub reply: Option<(u64, u16)>,
    pub ack_ms: Option<u64>,
    pub bye_ms: Option<u64>,
    /// Gave up waiting for the ACK of its 2xx.
    pub no_ack_ms: Option<u64>,
}

/// One call attempt of the carrier (one Call-ID).
#[derive(Debug, Clone, Default)]
pub struct CallRec {
    pub offered_ms: u64,
    /// The node the carrier sent it to, and whether that node answered at all.
    pub entry: String,
    pub trying: bool,
    /// The carrier gave this node up and moved the call to the next (a new Call-ID).
    pub moved_ms: Option<u64>,
    /// The final response the carrier got: (when, code).
    pub final_: Option<(u64, u16)>,
    /// The carrier hung up (sent its BYE) or gave up waiting.
    pub hangup_ms: Option<u64>,
    pub bye_answered: Option<u16>,
    pub gave_up_ms: Option<u64>,
    pub legs: BTreeMap<Pbx, Vec<Leg>>,
}

impl CallRec {
    /// When the PBX side answered, if it did.
    pub fn answered_ms(&self) -> Option<u64> {
        self.legs.values().flatten().filter_map(|l| l.reply.filter(|(_, c)| (200..300).contains(c)).map(|(t, _)| t)).min()
    }

    /// The PBX dialogs of this call (one per answered leg: Call-ID and To tag) up at `at` that the
    /// limit counts: from the PBX's 2xx until it got the BYE or gave up for want of an ACK, or the
    /// carrier's side ended (a leg whose BYE never came is over for the carrier; what the cluster
    /// still holds for it is the leak invariant's business). Counted once per node that delivered
    /// them: an orphan another node delivered counts (the ingress holds a second slot for a forward
    /// it moved off, `proxy/second_slot.rs`); two dialogs one node made (a Primary answering after
    /// that node failed over to the Secondary, its answer torn down when it arrives) count once,
    /// and the orphan's life is judged by `invariants::orphan` (docs/decisions.md says why).
    /// `pbx_crashes`: when each PBX's host crashed (it forgets its dialogs: one that crashed after
    /// answering a leg and before `at` holds it no more; seed 392730890).
    pub fn legs_up_at(&self, at: u64, pbx_crashes: &BTreeMap<&str, Vec<u64>>) -> u32 {
        let carrier_end = [self.hangup_ms, self.gave_up_ms].into_iter().flatten().min();
        let carried = self.carried();
        let forgotten = |p: &Pbx, answered: u64| pbx_crashes.get(p.host()).is_some_and(|c| c.iter().any(|t| *t >= answered && *t <= at));
        let up: std::collections::BTreeSet<&str> = self
            .legs
            .iter()
            .flat_map(|(p, legs)| legs.iter().map(move |l| (p, l)))
            .filter(|(_, l)| l.reply.is_some_and(|(_, c)| (200..300).contains(&c)))
            .filter(|(p, l)| l.reply.is_some_and(|(t, _)| t <= at && !forgotten(p, t)))
            .map(|(_, l)| l)
            .filter(|l| {
                // an orphan is up until the PBX has its BYE or gives up; the carrier's end does not end it
                let carrier_end = if carried.is_none_or(|c| std::ptr::eq(*l, c)) { carrier_end } else { None };
                [l.bye_ms, l.no_ack_ms, carrier_end].into_iter().flatten().min().is_none_or(|e| e > at)
            })
            .map(|l| l.egress.as_str())
            .collect();
        up.len() as u32
    }

    fn answered_legs(&self) -> impl Iterator<Item = &Leg> + '_ {
        self.legs.values().flatten().filter(|l| l.reply.is_some_and(|(_, c)| (200..300).contains(&c)))
    }

    /// The leg whose answer reached the carrier: the last answered before the carrier's 2xx.
    fn carried(&self) -> Option<&Leg> {
        let (fin, code) = self.final_?;
        if !(200..300).contains(&code) {
            return None;
        }
        self.answered_legs().filter(|l| l.reply.is_some_and(|(t, _)| t <= fin)).max_by_key(|l| l.reply.map(|(t, _)| t))
    }

    /// Dialogs a PBX set up for this call that the carrier never saw: the call went on through
    /// another leg while this one's answer was lost or late (a node that delivered it could not be
    /// heard, a PBX answered after the failover). hatrunk tears each down once it hears of it.
    pub fn orphans(&self) -> Vec<&Leg> {
        match self.carried() {
            Some(c) => self.answered_legs().filter(|l| !std::ptr::eq(*l, c)).collect(),
            None => Vec::new(),
        }
    }

    /// When each leg was answered.
    pub fn leg_answers(&self) -> Vec<u64> {
        self.answered_legs().filter_map(|l| l.reply.map(|(t, _)| t)).collect()
    }

    /// When the answered call stopped being in progress: the first of the PBX getting the BYE, the
    /// carrier hanging up or giving up, the PBX giving up for want of an ACK.
    pub fn ended_ms(&self) -> Option<u64> {
        let pbx = self.legs.values().flatten().filter_map(|l| l.bye_ms.or(l.no_ack_ms)).min();
        [pbx, self.hangup_ms, self.gave_up_ms].into_iter().flatten().min()
    }
}

/// A fault as applied: when, what, and the nodes it took out (down: crashed, hung or cut off).
#[derive(Debug, Clone)]
pub struct FaultRec {
    pub at_ms: u64,
    pub what: String,
    pub down: Vec<String>,
    /// Nodes back from an earlier fault.
    pub up: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Oracle {
    pub limit: u32,
    pub calls: BTreeMap<String, CallRec>,
    pub faults: Vec<FaultRec>,
    /// Configuration changes: (id, acknowledged at).
    pub config_acked: Vec<(String, u64)>,
    /// When the operator sent a delete of the main trunk (acknowledged or not: one whose answer
    /// was lost may still have committed).
    pub trunk_deleted: Vec<u64>,
    pub trunk_ready_ms: Option<u64>,
    /// Calls in progress at the PBXes, sampled at every change: (ms, count).
    pub in_progress: Vec<(u64, u32)>,
    /// Answered calls per egress node per second.
    pub egress: BTreeMap<u64, BTreeMap<String, u32>>,
    /// `cluster status` as the operator read it (`Options::read_status`): member name -> healthy.
    pub status_seen: Option<BTreeMap<String, bool>>,
    /// Operator actions due, for the operator agent to carry out in order.
    pub ops_due: std::collections::VecDeque<OpCmd>,
    /// The main trunk's limit as written: (sent at, acknowledged at or None, limit). The first is
    /// the trunk's creation.
    pub limits: Vec<(u64, Option<u64>, u32)>,
    /// The main trunk's limit as last acknowledged (None: deleted last).
    pub trunk_acked: Option<u32>,
    /// Stale trunk writes the cluster acknowledged (must be none).
    pub stale_acked: Vec<String>,
    /// Nodes removed from the cluster (acknowledged).
    pub removed: BTreeSet<String>,
    trace: Sha256,
}

/// An operator action with its targets resolved.
#[derive(Debug, Clone)]
pub enum OpCmd {
    Remove { id: u64, name: String, force: bool },
    Rejoin { name: String },
    TransferLeader { id: u64 },
    SetLimit(u32),
    DeleteRecreate,
    StaleWrite,
}

pub type Shared = Rc<RefCell<Oracle>>;

impl Oracle {
    pub fn shared(limit: u32) -> Shared {
        Rc::new(RefCell::new(Oracle { limit, trunk_acked: Some(limit), ..Default::default() }))
    }

    /// Add a line to the trace.
    pub fn log(&mut self, line: impl AsRef<str>) {
        tracing::debug!(target: "sim_oracle", t = now_ms(), "{}", line.as_ref());
        self.trace.update(now_ms().to_le_bytes());
        self.trace.update(line.as_ref().as_bytes());
        self.trace.update(b"\n");
    }

    pub fn trace_hash(&self) -> String {
        hex::encode(self.trace.clone().finalize())
    }

    pub fn call(&mut self, cid: &str) -> &mut CallRec {
        self.calls.entry(cid.to_string()).or_default()
    }

    /// Calls in progress at `at`, counted as the PBXes hold them: their dialogs up
    /// ([`CallRec::legs_up_at`]).
    pub fn count_in_progress(&self, at: u64) -> u32 {
        let mut crashes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for f in self.faults.iter().filter(|f| f.what.starts_with("pbx") && f.what.ends_with("crash")) {
            for host in &f.down {
                crashes.entry(host.as_str()).or_default().push(f.at_ms);
            }
        }
        self.calls.values().map(|c| c.legs_up_at(at, &crashes)).sum()
    }

    /// Re-count calls in progress after a change (answer or end).
    pub fn sample(&mut self) {
        let t = now_ms();
        let n = self.count_in_progress(t);
        if self.in_progress.last().map(|(_, c)| *c) != Some(n) {
            self.in_progress.push((t, n));
        }
    }
}

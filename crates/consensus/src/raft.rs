//! The running Raft member: start it over a store, write commands (forwarding to the leader when this
//! node is not it), linearizable reads, membership changes, and status for the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use hatrunk_core::trunk::Trunk;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::channels::Channels;
use crate::error::ConsensusError;
use crate::log_store::LogStore;
use crate::network::{tcp_dialer, Dialer, Network};
use crate::pb::cluster_client::ClusterClient;
use crate::pb::Blob;
use crate::sm_store::{SharedState, StateMachineStore};
use crate::state::ClusterState;
use crate::types::{Command, CommandResult, NodeInfo, Request, TypeConfig};

/// Raft timing. openraft 0.9 gives every AppendEntries one heartbeat interval to be answered and
/// every vote request `election_min_ms`, and a follower elects only after the leader lease
/// (`election_max_ms`) plus its own timeout. The defaults (150 / 800-1600 ms) replace a lost leader
/// in 2.4-3.2 s and keep working over links far slower than planned; 150 / 350-450 ms replaces
/// it within ~1.1 s where every inter-region RTT stays under ~100 ms (docs/consensus.md).
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming { heartbeat_ms: 150, election_min_ms: 800, election_max_ms: 1600, snapshot_every: 10_000 }
    }
}

/// How long one try of a write may wait for its commit.
const WRITE_TRY: Duration = Duration::from_secs(3);
/// What [`Consensus::write`] allows in all: more than its 20 tries can take, so it only bounds
/// what they did before.
const WRITE_BUDGET: Duration = Duration::from_secs(120);
/// What [`Consensus::read`] allows in all: an operator waits on it.
const READ_BUDGET: Duration = Duration::from_secs(15);

/// A read served by the leader after confirming its leadership (linearizable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Read {
    /// A trunk and its revision.
    Trunk(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadReply {
    Trunk(Option<(Trunk, u64)>),
}

/// Steps of a leadership transfer (openraft 0.9 has no transfer API; see [`Consensus::transfer_leader`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Control {
    /// Allow or forbid this node to start elections on its own timer.
    SetElection(bool),
    /// Start an election now.
    Elect,
    /// Start no election on this node's own timer for this many ms, then again: a transfer whose
    /// leader dies or whose "switch back on" is lost must not leave the cluster without elections
    /// (simulation seed 920233: a one-way partition swallowed it, and no leader was ever elected).
    Quiet(u64),
}

/// Switches a leader's network, heartbeats and elections back on when dropped, and ends the
/// transfer for the check-quorum watchdog.
struct Restore<'a> {
    raft: &'a Raft<TypeConfig>,
    transferring: &'a AtomicBool,
    mute: &'a AtomicBool,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.mute.store(false, Ordering::Release);
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        self.transferring.store(false, Ordering::Release);
    }
}

/// One member of the Raft group.
pub struct Consensus {
    pub id: u64,
    pub info: NodeInfo,
    pub raft: Raft<TypeConfig>,
    state: SharedState,
    applied: Arc<tokio::sync::Notify>,
    client: u64,
    serial: AtomicU64,
    dialer: Dialer,
    /// Kept channels for this member's own requests to others (forwarded writes and reads, controls).
    channels: Channels,
    /// Each [`Control::Quiet`] takes the next number; only the latest one switches elections back on.
    quiet: Arc<AtomicU64>,
    /// Set while [`Consensus::transfer_leader`] has this leader's heartbeats off on purpose.
    transferring: Arc<AtomicBool>,
    /// This member's network sends no AppendEntries while set (check-quorum, a transfer).
    mute: Arc<AtomicBool>,
}

impl Consensus {
    /// Start a member over `backend` ([`crate::disk::DiskBackend`] in production), talking TCP.
    pub async fn start<B: Backend>(id: u64, info: NodeInfo, backend: B, timing: &RaftTiming) -> Result<Arc<Consensus>, ConsensusError> {
        Self::start_with(id, info, backend, timing, tcp_dialer()).await
    }

    /// Start a member whose channels to other members come from `dialer`.
    pub async fn start_with<B: Backend>(
        id: u64,
        info: NodeInfo,
        backend: B,
        timing: &RaftTiming,
        dialer: Dialer,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let log = LogStore::open(backend.clone());
        let sm = StateMachineStore::open(backend)?;
        let state = sm.shared();
        let applied = sm.applied();
        let mute = Arc::new(AtomicBool::new(false));
        let config = openraft::Config {
            cluster_name: "hatrunk".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
            max_in_snapshot_log_to_keep: timing.snapshot_every.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Config(e.to_string()))?;
        let raft = Raft::new(id, Arc::new(config), Network { dialer: dialer.clone(), mute: mute.clone() }, log, sm)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        // a random client id per process: serials restart at 1 on every boot
        let client = crate::rt::next_u64() | 1;
        let transferring = Arc::new(AtomicBool::new(false));
        // check-quorum after two of the longest election timeouts without a quorum answer; quiet
        // for long enough that a follower's lease runs out and an election completes
        let limit = timing.election_max_ms * 2;
        crate::quorum::spawn(raft.clone(), mute.clone(), transferring.clone(), timing.heartbeat_ms, limit, limit + timing.election_max_ms);
        Ok(Arc::new(Consensus {
            id,
            info,
            raft,
            state,
            applied,
            client,
            serial: AtomicU64::new(0),
            channels: Channels::new(dialer.clone()),
            dialer,
            quiet: Arc::default(),
            transferring,
            mute,
        }))
    }

    /// A channel to another member (or any cluster address), made by this member's dialer.
    pub fn dial(&self, addr: &str) -> Result<Channel, String> {
        (self.dialer)(addr)
    }

    /// Ask the process at `addr` who it is: (node id, info, initialised).
    pub async fn peer_info(&self, addr: &str) -> Result<(u64, NodeInfo, bool), String> {
        let mut c = ClusterClient::new(self.dial(addr)?);
        let mut r = tonic::Request::new(Blob { data: Vec::new() });
        r.set_timeout(Duration::from_secs(3));
        let reply = c.info(r).await.map_err(|s| format!("{addr} did not answer as a hatrunk node: {}", s.message()))?;
        crate::codec::decode(&reply.into_inner().data).map_err(|e| format!("{addr} sent an unreadable identity: {e}"))
    }

    /// Make this node a one-voter cluster, if it is not initialised yet.
    pub async fn initialize(&self) -> Result<bool, ConsensusError> {
        if self.is_initialized().await {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.id, self.info.clone())]);
        self.raft.initialize(members).await.map_err(|e| ConsensusError::Raft(e.to_string()))?;
        Ok(true)
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Read the applied state locally (what routing uses: fast, possibly a few ms behind the leader).
    pub fn local<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        let d = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&d.state)
    }

    /// The index of the last log entry this member has applied: the same entry has the same
    /// index on every member, so two members compare how far their states have come with it.
    pub fn applied_index(&self) -> u64 {
        let d = self.state.read().unwrap_or_else(|p| p.into_inner());
        d.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Wait until this member's applied state satisfies `f`, at most `within`; whether it did.
    /// What a write forwarded to the leader needs before its caller reads here: the leader has
    /// committed it, this member may apply it a heartbeat later.
    pub async fn local_until(&self, within: Duration, f: impl Fn(&ClusterState) -> bool) -> bool {
        let due = tokio::time::sleep(within);
        tokio::pin!(due);
        loop {
            // listen before looking, so an apply between the two is not missed
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if self.local(&f) {
                return true;
            }
            tokio::select! {
                _ = &mut due => return false,
                _ = &mut applied => {}
            }
        }
    }

    /// Notified after commands were applied to this member's state (see [`Consensus::local`]).
    pub fn applied(&self) -> Arc<tokio::sync::Notify> {
        self.applied.clone()
    }

    /// Apply a command through Raft; followers forward it to the leader. Retries reuse the same
    /// serial, so the state machine applies the command once whatever happens to the replies.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ConsensusError> {
        self.write_within(command, WRITE_BUDGET).await
    }

    /// [`Consensus::write`], giving up once `budget` has passed (the same request is retried until
    /// then, so a late commit of an earlier try is not applied twice). For background writes that
    /// a fresh one next round replaces, so they never hold their caller for a minute.
    pub async fn write_within(&self, command: Command, budget: Duration) -> Result<CommandResult, ConsensusError> {
        let req = Request { client: self.client, serial: self.serial.fetch_add(1, Ordering::Relaxed) + 1, command };
        let mut tries = Tries::within(budget);
        let mut last = String::from("no leader");
        while let Some(left) = tries.next().await {
            // a leader that lost its majority may never answer: give up on this try and retry
            let Ok(written) = tokio::time::timeout(WRITE_TRY.min(left), self.raft.client_write(req.clone())).await else {
                last = "the leader did not commit in time".into();
                continue;
            };
            match written {
                Ok(r) => return Ok(r.data.result.unwrap_or(CommandResult::Ok)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
                    Some(leader) => {
                        let left = tries.left();
                        let forward = tokio::time::timeout(left, forward_write(&self.channels, &leader.cluster_addr, &req));
                        tokio::select! {
                            r = forward => match r {
                                Ok(Ok(r)) => return Ok(r),
                                Ok(Err(e)) => last = e,
                                Err(_) => last = "the leader did not answer in time".into(),
                            },
                            // a leader lost silently (its region cut off) holds the forward until its
                            // RPC timeout; once another is elected, try again there at once (the
                            // request keeps its serial, so a late commit of this one is not applied twice)
                            _ = self.leader_other_than(f.leader_id) => {
                                last = "the leader changed while the write was forwarded".into();
                                continue;
                            }
                        }
                    }
                    None => last = "no leader elected".into(),
                },
                Err(e) => return Err(ConsensusError::Raft(e.to_string())),
            }
        }
        Err(ConsensusError::Unavailable(last))
    }

    /// Resolves once this member knows a leader other than `was` (itself included).
    async fn leader_other_than(&self, was: Option<u64>) {
        let mut rx = self.raft.metrics();
        loop {
            let now = rx.borrow_and_update().current_leader;
            if now.is_some() && now != was {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Serve a forwarded write: only the leader applies it.
    pub async fn write_local(&self, req: Request) -> Result<CommandResult, String> {
        match tokio::time::timeout(WRITE_TRY, self.raft.client_write(req))
            .await
            .map_err(|_| "the leader did not commit in time".to_string())?
        {
            Ok(r) => Ok(r.data.result.unwrap_or(CommandResult::Ok)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A linearizable read: confirmed by the leader (forwarded there from a follower). Tried
    /// again, as a write is, while it fails for a reason that passes: the leader's confirming
    /// round may miss its quorum when members answer late (openraft gives each AppendEntries one
    /// heartbeat interval; nine debug-build members on two cores missed it, and `trunk apply`
    /// failed with "not enough for a quorum", fresh-clone run of 2026-12-01), or no leader is
    /// elected yet. A read changes nothing, so a retry is always safe.
    pub async fn read(&self, q: Read) -> Result<ReadReply, ConsensusError> {
        let mut tries = Tries::within(READ_BUDGET);
        let mut last = String::from("no leader");
        while let Some(left) = tries.next().await {
            let Ok(checked) = tokio::time::timeout(WRITE_TRY.min(left), self.raft.ensure_linearizable()).await else {
                last = "the leader did not confirm in time".into();
                continue;
            };
            match checked {
                Ok(_) => return Ok(self.answer(&q)),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => match f.leader_node {
                    Some(leader) => {
                        match tokio::time::timeout(tries.left(), forward_read(&self.channels, &leader.cluster_addr, &q)).await {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(e)) => last = e,
                            Err(_) => last = "the leader did not answer in time".into(),
                        }
                    }
                    None => last = "no leader elected".into(),
                },
                Err(RaftError::APIError(e)) => last = e.to_string(),
                Err(e) => return Err(ConsensusError::Raft(e.to_string())),
            }
        }
        Err(ConsensusError::Unavailable(last))
    }

    /// Serve a forwarded read (leader only).
    pub async fn read_local(&self, q: Read) -> Result<ReadReply, String> {
        self.raft.ensure_linearizable().await.map_err(|e| e.to_string())?;
        Ok(self.answer(&q))
    }

    fn answer(&self, q: &Read) -> ReadReply {
        match q {
            Read::Trunk(id) => ReadReply::Trunk(self.local(|s| s.trunks.get(id).map(|t| ((**t).clone(), s.fences.revision(id))))),
        }
    }

    /// Add a node: as learner (catching up), then as voter unless `learner_only`. Leader only.
    pub async fn add_node(&self, id: u64, info: NodeInfo, learner_only: bool) -> Result<(), ConsensusError> {
        let raft_err = |e: RaftError<u64, ClientWriteError<u64, NodeInfo>>| ConsensusError::Raft(e.to_string());
        self.raft.add_learner(id, info, true).await.map_err(raft_err)?;
        if !learner_only {
            self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map_err(raft_err)?;
        }
        Ok(())
    }

    /// Remove a node from the membership (voter or learner). Leader only. Refuses an unknown id and
    /// the last voter.
    pub async fn remove_node(&self, id: u64) -> Result<NodeInfo, ConsensusError> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let info = m.membership().get_node(&id).cloned().ok_or_else(|| ConsensusError::Refused(format!("node {id} is not a member")))?;
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(ConsensusError::Refused(format!("node {id} is the last voter; removing it would end the cluster")));
        }
        let raft_err = |e: RaftError<u64, ClientWriteError<u64, NodeInfo>>| ConsensusError::Raft(e.to_string());
        if voters.contains(&id) {
            self.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await.map_err(raft_err)?;
        } else {
            self.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await.map_err(raft_err)?;
        }
        Ok(info)
    }

    /// Serve a transfer step sent by the leader.
    pub async fn control(&self, c: Control) -> Result<(), String> {
        match c {
            Control::SetElection(on) => {
                self.quiet.fetch_add(1, Ordering::AcqRel);
                self.raft.runtime_config().elect(on)
            }
            Control::Elect => self.raft.trigger().elect().await.map_err(|e| e.to_string())?,
            Control::Quiet(ms) => {
                let mine = self.quiet.fetch_add(1, Ordering::AcqRel) + 1;
                self.raft.runtime_config().elect(false);
                let (quiet, raft) = (self.quiet.clone(), self.raft.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if quiet.load(Ordering::Acquire) == mine {
                        raft.runtime_config().elect(true);
                    }
                });
            }
        }
        Ok(())
    }

    /// Hand leadership to voter `target`. Run on the leader. openraft 0.9 has no transfer, and a
    /// follower refuses to vote while the leader's lease (election_timeout_max since the last
    /// heartbeat) holds, so: the other followers stop electing on their own, this leader stops
    /// sending AppendEntries (once the target holds what any other voter holds), and once the lease
    /// is over the target starts an election, which it wins with the votes of the quiet followers. Everything is switched back on afterwards, whatever
    /// happened.
    pub async fn transfer_leader(&self, target: u64, timing: &RaftTiming) -> Result<(), ConsensusError> {
        if !self.is_leader() {
            return Err(ConsensusError::Refused("only the leader can hand leadership over".into()));
        }
        if target == self.id {
            return Ok(());
        }
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: Vec<u64> = m.membership().voter_ids().collect();
        if !voters.contains(&target) {
            return Err(ConsensusError::Refused(format!("node {target} is not a voter")));
        }
        let addr = |id: u64| m.membership().get_node(&id).map(|n| n.cluster_addr.clone()).unwrap_or_default();
        let others: Vec<u64> = voters.iter().copied().filter(|v| *v != target && *v != self.id).collect();
        // the followers switch elections back on by themselves once the transfer is certainly over
        let quiet_ms = timing.election_max_ms + timing.heartbeat_ms * 2 + 5_000 + 1_000;
        for v in &others {
            let _ = send_control(&self.channels, &addr(*v), Control::Quiet(quiet_ms)).await;
        }
        // and this leader switches its own back on however this ends (even if the caller gives up
        // and drops this future)
        let _restore = Restore { raft: &self.raft, transferring: &self.transferring, mute: &self.mute };
        self.transferring.store(true, Ordering::Release);
        self.raft.runtime_config().elect(false);
        self.raft.runtime_config().heartbeat(false);
        self.mute_with(target, &others, timing).await;
        // the followers' leader lease runs from the last AppendEntries they got, before the mute
        tokio::time::sleep(Duration::from_millis(timing.election_max_ms + timing.heartbeat_ms * 2)).await;
        let elected = send_control(&self.channels, &addr(target), Control::Elect).await;
        let mut won = false;
        if elected.is_ok() {
            for _ in 0..50 {
                if self.raft.metrics().borrow().current_leader == Some(target) {
                    won = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        drop(_restore);
        for v in &others {
            let _ = send_control(&self.channels, &addr(*v), Control::SetElection(true)).await;
        }
        match (elected, won) {
            (Err(e), _) => Err(ConsensusError::Unavailable(format!("node {target} could not start an election: {e}"))),
            (_, false) => Err(ConsensusError::Unavailable(format!("node {target} did not win the election"))),
            _ => Ok(()),
        }
    }

    /// Stop sending AppendEntries with `target` holding at least every entry any other voter
    /// holds. Switching heartbeats off is not enough for a transfer: every write (admission lease
    /// renewals, several a second) is still replicated, and each one renews the followers' leader
    /// lease, so they refuse the target's votes; and a follower ahead of the target refuses it too.
    /// So the network goes mute, and speaks again briefly while the target lags behind another.
    async fn mute_with(&self, target: u64, others: &[u64], timing: &RaftTiming) {
        for _ in 0..20 {
            self.mute.store(true, Ordering::Release);
            // answers to what was already on the way still come in
            tokio::time::sleep(Duration::from_millis(timing.heartbeat_ms)).await;
            let m = self.raft.metrics().borrow().clone();
            let matched = |id: u64| m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
            if others.iter().all(|o| matched(*o) <= matched(target)) {
                return;
            }
            self.mute.store(false, Ordering::Release);
            tokio::time::sleep(Duration::from_millis(timing.heartbeat_ms)).await;
        }
        self.mute.store(true, Ordering::Release);
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader's cluster address, when one is known.
    pub fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.cluster_addr.clone();
        Some((id, node))
    }
}

/// One failure-detector heartbeat to `client`: the responder's id and whether it reaches a majority.
pub async fn ping(client: &mut ClusterClient<Channel>, from: u64, timeout: Duration) -> Result<(u64, bool), String> {
    let mut r = tonic::Request::new(Blob { data: crate::codec::encode(&from).map_err(|e| e.to_string())? });
    r.set_timeout(timeout);
    let reply =
        tokio::time::timeout(timeout, client.ping(r)).await.map_err(|_| "timed out".to_string())?.map_err(|s| s.message().to_string())?;
    crate::codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())
}

/// The tries of a write or read: at most 20, the first at once, then after 100, 200, ... up to
/// 500 ms, while the budget lasts.
struct Tries {
    deadline: tokio::time::Instant,
    attempt: u64,
}

impl Tries {
    fn within(budget: Duration) -> Tries {
        Tries { deadline: tokio::time::Instant::now() + budget, attempt: 0 }
    }

    /// Wait for the next try; the budget left for it, or None when none is left.
    async fn next(&mut self) -> Option<Duration> {
        if self.attempt >= 20 {
            return None;
        }
        if self.attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * self.attempt.min(5))).await;
        }
        self.attempt += 1;
        Some(self.left()).filter(|left| !left.is_zero())
    }

    /// What is left of the budget now.
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Which request-reply RPC of the cluster service to call.
#[derive(Clone, Copy)]
enum Rpc {
    Control,
    Write,
    Read,
}

/// Call `rpc` on the node at `addr` with `q` (bincode), within `timeout`, and decode its
/// `Result<R, String>` answer.
async fn call<Q: Serialize, R: serde::de::DeserializeOwned>(
    channels: &Channels,
    addr: &str,
    rpc: Rpc,
    q: &Q,
    timeout: Duration,
) -> Result<R, String> {
    let mut c = ClusterClient::new(channels.get(addr)?);
    let mut r = tonic::Request::new(Blob { data: crate::codec::encode(q).map_err(|e| e.to_string())? });
    r.set_timeout(timeout);
    let reply = match rpc {
        Rpc::Control => c.control(r).await,
        Rpc::Write => c.write(r).await,
        Rpc::Read => c.read(r).await,
    }
    .map_err(|s| s.message().to_string())?;
    crate::codec::decode::<Result<R, String>>(&reply.into_inner().data).map_err(|e| e.to_string())?
}

async fn send_control(channels: &Channels, addr: &str, c: Control) -> Result<(), String> {
    call(channels, addr, Rpc::Control, &c, Duration::from_secs(3)).await
}

async fn forward_write(channels: &Channels, addr: &str, req: &Request) -> Result<CommandResult, String> {
    call(channels, addr, Rpc::Write, req, Duration::from_secs(5)).await
}

async fn forward_read(channels: &Channels, addr: &str, q: &Read) -> Result<ReadReply, String> {
    call(channels, addr, Rpc::Read, q, Duration::from_secs(5)).await
}

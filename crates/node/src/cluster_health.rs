//! The failure detector at the edge: a heartbeat (`Ping` on the cluster gRPC) to every other member
//! each interval, answers fed to the pure [`Liveness`] in `core`, and the resulting [`HealthView`]
//! handed to the proxy (egress choice) and the admin API (`members`). Membership comes from Raft;
//! nothing is gossiped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hatrunk_consensus::pb::cluster_client::ClusterClient;
use hatrunk_consensus::raft::{ping, Consensus};
use hatrunk_core::ha::{HealthView, Liveness, Member};
use tonic::transport::Channel;

/// What the proxy needs from the cluster: who is there and who answers, now.
pub trait ClusterView: Send + Sync {
    fn view(&self, now_ms: u64) -> HealthView;

    /// Whether this node reaches a majority of voters (asked for every new INVITE: keep it cheap).
    fn quorum(&self, now_ms: u64) -> bool {
        self.view(now_ms).quorum
    }
}

/// A fixed view (a node alone, or a test's).
impl ClusterView for HealthView {
    fn view(&self, _now_ms: u64) -> HealthView {
        self.clone()
    }
}

/// Detector timing (`[cluster] ping_interval_ms`, `failure_threshold_ms`).
#[derive(Debug, Clone, Copy)]
pub struct DetectorTiming {
    pub interval_ms: u64,
    pub threshold_ms: u64,
    /// A member back from being down counts as up after this many answers in a row.
    pub recover_after: u32,
}

pub struct ClusterHealth {
    consensus: Arc<Consensus>,
    timing: DetectorTiming,
    liveness: Mutex<Liveness>,
    /// Shared with the cluster service, which reports it in `Ping` answers.
    pub quorum: Arc<AtomicBool>,
    clients: Mutex<HashMap<u64, (String, ClusterClient<Channel>)>>,
    in_flight: Mutex<HashSet<u64>>,
    clock: fn() -> u64,
}

impl ClusterHealth {
    pub fn new(consensus: Arc<Consensus>, timing: DetectorTiming, clock: fn() -> u64) -> Arc<ClusterHealth> {
        let h = Arc::new(ClusterHealth {
            consensus,
            timing,
            liveness: Mutex::new(Liveness::with_recovery(timing.recover_after)),
            quorum: Arc::new(AtomicBool::new(false)),
            clients: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            clock,
        });
        h.refresh_quorum();
        h
    }

    /// The members Raft's membership names, with their place and role.
    pub fn members(&self) -> Vec<Member> {
        let m = self.consensus.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        m.membership()
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                name: n.name.clone(),
                region: n.region.clone(),
                zone: n.zone.clone(),
                sip: n.role == hatrunk_consensus::NodeRole::Sip,
                voter: voters.contains(id),
                sip_addr: n.sip_addr.clone(),
            })
            .collect()
    }

    fn refresh_quorum(&self) {
        let v = self.view((self.clock)());
        self.quorum.store(v.quorum, Ordering::Relaxed);
    }

    /// Heartbeat every member each interval until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(me.timing.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.round();
                me.refresh_quorum();
            }
        });
    }

    fn round(self: &Arc<Self>) {
        let members = self.members();
        let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
        self.liveness.lock().unwrap_or_else(|p| p.into_inner()).retain(&ids);
        let self_id = self.consensus.id;
        for m in members.into_iter().filter(|m| m.id != self_id) {
            if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(m.id) {
                continue; // the previous heartbeat is still out (a hung peer): do not pile up
            }
            let Some(mut client) = self.client(m.id) else {
                self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.id);
                continue;
            };
            let me = self.clone();
            // an answer later than the threshold is as good as none
            let timeout = Duration::from_millis(self.timing.threshold_ms);
            tokio::spawn(async move {
                let r = ping(&mut client, self_id, timeout).await;
                if let Ok((id, quorum)) = r {
                    if id == m.id {
                        let threshold = me.timing.threshold_ms;
                        me.liveness.lock().unwrap_or_else(|p| p.into_inner()).observe_within(id, (me.clock)(), quorum, threshold);
                    }
                }
                me.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.id);
            });
        }
    }

    /// A channel per member, rebuilt when its address changes.
    fn client(&self, id: u64) -> Option<ClusterClient<Channel>> {
        let addr = self.consensus.raft.metrics().borrow().membership_config.membership().get_node(&id)?.cluster_addr.clone();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, c)) = clients.get(&id) {
            if *a == addr {
                return Some(c.clone());
            }
        }
        let c = ClusterClient::new(self.consensus.dial(&addr).ok()?);
        clients.insert(id, (addr, c.clone()));
        Some(c)
    }
}

impl ClusterView for ClusterHealth {
    fn view(&self, now_ms: u64) -> HealthView {
        let members = self.members();
        self.liveness.lock().unwrap_or_else(|p| p.into_inner()).view(self.consensus.id, &members, now_ms, self.timing.threshold_ms)
    }

    /// As of the last detector round (at most one interval old).
    fn quorum(&self, _now_ms: u64) -> bool {
        self.quorum.load(Ordering::Relaxed)
    }
}

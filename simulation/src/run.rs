//! One run: build the turmoil world from a scenario and a seed (nodes running the real node code on
//! memory disks, the carrier, the PBXes, the operator), step simulated time, apply the faults on
//! schedule, then hand the oracle to the invariants.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hatrunk_consensus::disk::crash::SimFs;
use hatrunk_consensus::disk::{DiskBackend, StoreOptions};
use hatrunk_consensus::NodeInfo;
use hatrunk_node::config::NodeConfig;
use hatrunk_node::runtime::{run_with, Handles, SipIo, Wiring};
use hatrunk_sip::transport::Transports;
use tokio::sync::mpsc;

use crate::broken::Broken;
use crate::net::{dialer, incoming, SimUdp};
use crate::oracle::{FaultRec, OpCmd, Oracle, Pbx};
use crate::scenario::{Fault, Op, Scenario, Target};
use crate::topology::{Layout, CLUSTER_PORT, SIP_PORT};
use crate::ua;
use crate::ua::pbx::{Behaviour, Mode};

/// The wall-clock epoch simulated nodes see (2026-01-01T00:00:00Z), so CDR times replay too.
const EPOCH_MS: u64 = 1_767_225_600_000;
/// The hosts at the SIP edge: the only ones whose links get random loss (turmoil's TCP between
/// nodes does not retransmit, so loss there would break connections rather than lose packets).
const EDGE: [&str; 3] = ["carrier", "pbx-p", "pbx-s"];
/// Every host's clock advances this much per simulation step.
const TICK_MS: u64 = 1;

fn sim_clock() -> u64 {
    EPOCH_MS + crate::oracle::now_ms()
}

/// Build options beyond the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Run a deliberately broken build (the checker's own check).
    pub broken: Option<Broken>,
    /// The operator also reads `cluster status` from this node at this simulated time (ms); what it
    /// saw lands in [`Oracle::status_seen`]. Off by default, so named runs keep their traces.
    pub read_status: Option<(&'static str, u64)>,
}

/// What a run produced.
pub struct Outcome {
    pub oracle: Oracle,
    /// Simulated time the run covered.
    pub sim_ms: u64,
    pub node_states: BTreeMap<String, NodeState>,
    pub error: Option<String>,
    /// The run used a deliberately broken build.
    pub broken: Option<Broken>,
}

/// What a live node's replicated state says at the end.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub trunks: BTreeSet<String>,
    /// The main trunk's limit (None: it does not exist here).
    pub limit: Option<u32>,
    pub slots: u32,
    pub shares: u32,
    /// The escrow ledger as this node applied it (for the leak report).
    pub ledger: String,
    /// The last log index it applied.
    pub applied: u64,
}

type Registry = Rc<RefCell<BTreeMap<String, Handles>>>;

pub fn run(sc: &Scenario, seed: u64, opts: Options) -> Outcome {
    hatrunk_consensus::rt::seed(seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(sc.end_ms + 60_000))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(sc.latency_ms.0))
        .max_message_latency(Duration::from_millis(sc.latency_ms.1))
        .repair_rate(0.9)
        .rng_seed(seed)
        .build();
    let layout = Rc::new(sc.layout.clone());
    let oracle = Oracle::shared(sc.limit);
    let registry: Registry = Rc::new(RefCell::new(BTreeMap::new()));
    // addresses first: node configurations name each other
    let mut hosts: Vec<String> = layout.nodes.iter().map(|n| n.name.clone()).collect();
    hosts.extend(["carrier", "pbx-p", "pbx-s", "operator"].map(String::from));
    for h in &hosts {
        sim.lookup(h.as_str());
    }
    let members: BTreeMap<u64, NodeInfo> = layout
        .nodes
        .iter()
        .map(|n| {
            let ip = sim.lookup(n.name.as_str());
            let info = NodeInfo {
                name: n.name.clone(),
                region: n.region.clone(),
                zone: n.zone.clone(),
                role: if n.witness { hatrunk_consensus::NodeRole::Witness } else { hatrunk_consensus::NodeRole::Sip },
                cluster_addr: format!("{ip}:{CLUSTER_PORT}"),
                sip_addr: if n.witness { String::new() } else { format!("{ip}:{SIP_PORT}") },
            };
            (n.id, info)
        })
        .collect();
    let mut disks: BTreeMap<String, SimFs> = BTreeMap::new();
    for n in &layout.nodes {
        let disk = SimFs::default();
        disks.insert(n.name.clone(), disk.clone());
        let mut toml = layout.node_toml(n, sim.lookup(n.name.as_str()));
        if let Some(every) = sc.snapshot_every {
            toml = toml.replace("[cluster]\n", &format!("[cluster]\nsnapshot_every = {every}\n"));
        }
        let cfg = NodeConfig::from_toml(&toml).expect("the simulation's node config is valid");
        let (members, registry, name, witness) = (members.clone(), registry.clone(), n.name.clone(), n.witness);
        let node_seed = seed ^ n.id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // every boot draws new tags and branches, as production's clock-derived seed does: a
        // restarted node must not reuse its previous life's branches towards the same PBX
        let boots = Rc::new(std::cell::Cell::new(0u64));
        sim.host(n.name.as_str(), move || {
            boots.set(boots.get() + 1);
            let node_seed = node_seed ^ boots.get().wrapping_mul(0xd1b5_4a32_d192_ed03);
            let first_boot = boots.get() == 1;
            let (cfg, disk, members, registry, name) = (cfg.clone(), disk.clone(), members.clone(), registry.clone(), name.clone());
            async move {
                // every boot opens the store on what its disk kept, as a restarted process does
                let store = DiskBackend::open(disk, std::path::Path::new("/data/raft"), StoreOptions::default())?;
                let sip = if witness {
                    None
                } else {
                    let udp = turmoil::net::UdpSocket::bind(("0.0.0.0", SIP_PORT)).await?;
                    let (tx, events) = mpsc::channel(65_536);
                    let transports = Transports::start_datagram(Arc::new(SimUdp(udp, name.clone())), tx);
                    let (cdrs, mut cdr_rx) = mpsc::channel(65_536);
                    tokio::spawn(async move { while cdr_rx.recv().await.is_some() {} });
                    Some(SipIo { transports, events, cdrs, secret: format!("sim-secret-{name}") })
                };
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", CLUSTER_PORT)).await?;
                let reg = registry.clone();
                let who = name.clone();
                let wiring = Wiring {
                    backend: store,
                    dialer: dialer(),
                    clock: sim_clock,
                    sip,
                    http: None,
                    seed: node_seed,
                    // only a first boot initialises; a node given an empty disk later waits to be joined
                    members: first_boot.then_some(members),
                    grpc: Default::default(),
                    on_ready: Some(Box::new(move |h| {
                        reg.borrow_mut().insert(who, h);
                    })),
                    admission_layer: opts.broken.and_then(Broken::admission_layer),
                    store_layer: opts.broken.and_then(Broken::store_layer),
                };
                run_with(cfg, wiring, incoming(listener), std::future::pending()).await?;
                Ok(())
            }
        });
    }
    let primary: Mode = Rc::new(RefCell::new(Behaviour::Answer));
    let secondary: Mode = Rc::new(RefCell::new(Behaviour::Answer));
    for (which, mode) in [(Pbx::Primary, primary.clone()), (Pbx::Secondary, secondary.clone())] {
        let (o, l) = (oracle.clone(), layout.clone());
        sim.host(which.host(), move || ua::pbx::run(which, mode.clone(), o.clone(), l.clone()));
    }
    {
        let (o, l, load) = (oracle.clone(), layout.clone(), sc.load.clone());
        sim.host("carrier", move || ua::carrier::run(load.clone(), seed, o.clone(), l.clone()));
    }
    {
        let (o, l) = (oracle.clone(), layout.clone());
        let (limit, until_ms, read_status) = (sc.limit, sc.load.end_ms, opts.read_status);
        sim.host("operator", move || ua::operator::run(ua::operator::Plan { limit, until_ms, read_status }, o.clone(), l.clone()));
    }
    // SIP loss on the edge links only (see EDGE); cluster links get partitions instead
    let set_loss = |sim: &mut turmoil::Sim, rate: f64| {
        for n in layout.sip_nodes() {
            for e in EDGE {
                sim.set_link_fail_rate(n.name.as_str(), e, rate);
            }
        }
    };
    if sc.loss > 0.0 {
        set_loss(&mut sim, sc.loss);
    }

    crate::net::sip_heal();
    let mut faults = Faults {
        resolved: BTreeMap::new(),
        crashed: BTreeSet::new(),
        cut: BTreeSet::new(),
        oneway: BTreeSet::new(),
        down_by: BTreeMap::new(),
        partitions: Vec::new(),
        flaps: Vec::new(),
        hung: BTreeMap::new(),
    };
    let mut schedule: std::collections::VecDeque<(u64, u32, Fault)> = sc.faults.iter().cloned().collect();
    let mut error = None;
    let mut t = 0u64;
    while t < sc.end_ms {
        while let Some((at, id, f)) = schedule.front().cloned() {
            if at > t {
                break;
            }
            schedule.pop_front();
            // an operator wipes a node's data only once it is out of the cluster: a rejoin waits
            // for the removal before it (still draining, or being retried) to be acknowledged
            if let Fault::Operator(Op::Rejoin(node)) = &f {
                let name = faults.resolve(node, &layout, &registry, &hosts).into_iter().next();
                if name.is_some_and(|n| !oracle.borrow().removed.contains(&n)) {
                    let later = schedule.iter().position(|(a, _, _)| *a > t + 1000).unwrap_or(schedule.len());
                    schedule.insert(later, (t + 1000, id, f));
                    break;
                }
            }
            let mut rec = faults.apply(&mut sim, &layout, &registry, &disks, &hosts, id, &f, &primary, &secondary, &set_loss, t);
            let mut o = oracle.borrow_mut();
            if let Fault::Operator(Op::Rejoin(node)) = &f {
                // joining again takes an empty data_dir: the node is stopped, wiped and started
                for n in faults.resolve(node, &layout, &registry, &hosts).into_iter().take(1) {
                    if !faults.crashed.contains(&n) {
                        sim.crash(n.as_str());
                        registry.borrow_mut().remove(&n);
                    }
                    faults.crashed.remove(&n);
                    if let Some(d) = disks.get(&n) {
                        d.wipe();
                    }
                    sim.bounce(n.as_str());
                }
            }
            if let Fault::Operator(op) = &f {
                let first = |t: &Target| {
                    let name = faults.resolve(t, &layout, &registry, &hosts).into_iter().next()?;
                    layout.by_name(&name).map(|n| (n.id, n.name.clone()))
                };
                let cmd = match op {
                    Op::Remove { node, force } => first(node).map(|(id, name)| OpCmd::Remove { id, name, force: *force }),
                    Op::TransferLeader(node) => first(node).map(|(id, _)| OpCmd::TransferLeader { id }),
                    Op::Rejoin(node) => first(node).map(|(_, name)| OpCmd::Rejoin { name }),
                    Op::SetLimit(n) => Some(OpCmd::SetLimit(*n)),
                    Op::DeleteRecreate => Some(OpCmd::DeleteRecreate),
                    Op::StaleWrite => Some(OpCmd::StaleWrite),
                };
                rec.what = format!("operator {cmd:?}");
                o.ops_due.extend(cmd);
            }
            o.log(format!("fault {} down={:?} up={:?}", rec.what, rec.down, rec.up));
            o.faults.push(rec);
        }
        faults.flap(&mut sim, t);
        if let Err(e) = sim.step() {
            error = Some(e.to_string());
            break;
        }
        t = sim.elapsed().as_millis() as u64;
    }
    // let the last commits reach every live member before their states are read (up to 5 s
    // more): a share given back just before the end is not a leak on a follower that lags by one
    // heartbeat
    let settle_until = t + 5_000;
    while error.is_none() && t < settle_until && !converged(&registry, &faults.crashed) {
        if let Err(e) = sim.step() {
            error = Some(e.to_string());
            break;
        }
        t = sim.elapsed().as_millis() as u64;
    }
    // a removed node is no member: its state stops following the cluster's; a removal whose answer
    // the operator never got counts too (the final membership says)
    let mut removed = oracle.borrow().removed.clone();
    if let Some(members) = final_members(&registry, &faults.crashed) {
        removed.extend(layout.nodes.iter().map(|n| n.name.clone()).filter(|n| !members.contains(n)));
        oracle.borrow_mut().removed = removed.clone();
    }
    let node_states = registry
        .borrow()
        .iter()
        .filter(|(n, _)| !faults.crashed.contains(*n) && !removed.contains(*n))
        .map(|(n, h)| {
            let applied = h.consensus.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
            let st = h.consensus.local(|s| NodeState {
                trunks: s.trunks.keys().cloned().collect(),
                limit: s.trunks.get(crate::topology::TRUNK).map(|t| t.max_concurrent_calls),
                slots: s.pool.used(crate::topology::TRUNK),
                shares: s.shares.total(crate::topology::TRUNK),
                ledger: format!("{:?}", s.shares),
                applied,
            });
            (n.clone(), st)
        })
        .collect();
    drop(sim);
    let oracle = Rc::try_unwrap(oracle).map(RefCell::into_inner).unwrap_or_else(|rc| std::mem::take(&mut *rc.borrow_mut()));
    Outcome { oracle, sim_ms: t, node_states, error, broken: opts.broken }
}

/// Live nodes and what they applied: (applied index, members named).
fn applied(registry: &Registry, crashed: &BTreeSet<String>) -> Vec<(String, u64, BTreeSet<String>)> {
    registry
        .borrow()
        .iter()
        .filter(|(n, _)| !crashed.contains(*n))
        .map(|(n, h)| {
            let m = h.consensus.raft.metrics().borrow().clone();
            let members = m.membership_config.membership().nodes().map(|(_, i)| i.name.clone()).collect();
            (n.clone(), m.last_applied.map(|l| l.index).unwrap_or(0), members)
        })
        .collect()
}

/// The membership as the most advanced live node applied it.
fn final_members(registry: &Registry, crashed: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    applied(registry, crashed).into_iter().max_by_key(|(_, i, _)| *i).map(|(_, _, m)| m)
}

/// Whether every live member has applied as far as the most advanced one.
fn converged(registry: &Registry, crashed: &BTreeSet<String>) -> bool {
    let all = applied(registry, crashed);
    let Some((_, top, members)) = all.iter().max_by_key(|(_, i, _)| *i).cloned() else { return true };
    all.iter().filter(|(n, _, _)| members.contains(n)).all(|(_, i, _)| *i == top)
}

struct Faults {
    /// Nodes each fault step hit.
    resolved: BTreeMap<u32, Vec<String>>,
    crashed: BTreeSet<String>,
    /// Partitioned pairs, to heal exactly those.
    cut: BTreeSet<(String, String)>,
    /// One-way cuts (from, to), healed with them.
    oneway: BTreeSet<(String, String)>,
    /// Nodes each fault step put out of service, until the step that undoes it.
    down_by: BTreeMap<u32, Vec<String>>,
    /// Steps that are partitions (undone together by a heal).
    partitions: Vec<u32>,
    flaps: Vec<Flap>,
    /// Frozen nodes, by the step that froze them: a link out of a frozen group holds messages
    /// until resumed; nodes frozen together still reach each other, as the hang step made them.
    hung: BTreeMap<String, u32>,
}

/// A link between two groups of nodes that goes down and up every `period_ms` until `until_ms`.
struct Flap {
    a: Vec<String>,
    b: Vec<String>,
    period_ms: u64,
    until_ms: u64,
    down: bool,
}

impl Faults {
    fn resolve(&self, t: &Target, layout: &Layout, registry: &Registry, hosts: &[String]) -> Vec<String> {
        let leader = || -> Option<String> {
            let reg = registry.borrow();
            let id = reg.values().find_map(|h| h.consensus.raft.metrics().borrow().current_leader)?;
            layout.nodes.iter().find(|n| n.id == id).map(|n| n.name.clone())
        };
        match t {
            Target::Nodes(v) => v.clone(),
            Target::All => hosts.to_vec(),
            Target::Zone(z) => layout.nodes.iter().filter(|n| &n.zone == z).map(|n| n.name.clone()).collect(),
            Target::Region(r) => layout.nodes.iter().filter(|n| &n.region == r).map(|n| n.name.clone()).collect(),
            Target::Leader => leader().into_iter().collect(),
            Target::LeaderRegion => {
                let Some(l) = leader() else { return Vec::new() };
                let region = layout.by_name(&l).map(|n| n.region.clone()).unwrap_or_default();
                layout.nodes.iter().filter(|n| n.region == region).map(|n| n.name.clone()).collect()
            }
            Target::Of(id) => self.resolved.get(id).cloned().unwrap_or_default(),
        }
    }

    /// Who is out of service when `hit` is crashed, frozen or cut off: `hit` itself, and the
    /// other nodes too when `hit` holds the majority of voters (every node is a voter), since
    /// what remains cannot commit. `cut_only`: `hit` still reaches carrier and PBXes, so only the
    /// side without a majority is out.
    fn out_of_service(layout: &Layout, hit: &[String], cut_only: bool) -> Vec<String> {
        let all: Vec<String> = layout.nodes.iter().map(|n| n.name.clone()).collect();
        let rest: Vec<String> = all.iter().filter(|n| !hit.contains(n)).cloned().collect();
        if rest.is_empty() && cut_only {
            return Vec::new(); // cut off from nobody
        }
        let majority = hit.iter().filter(|n| all.contains(n)).count() * 2 > all.len();
        match (majority, cut_only) {
            (true, true) => rest,
            (false, true) => hit.to_vec(),
            (true, false) => all,
            (false, false) => hit.to_vec(),
        }
    }

    fn cut(&mut self, sim: &mut turmoil::Sim, a: &str, b: &str) {
        let k = if a < b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
        self.cut.insert(k);
        self.settle(sim, a, b);
    }

    /// Set the link between `a` and `b` to what every fault in force says together. turmoil keeps
    /// one state per link, so releasing a hang would otherwise undo a cut made during it
    /// (seed 573282830: a zone cut off from the cluster reached the resumed region again), and a
    /// heal or flap would release a frozen node's link. A cut wins over a hang (messages are
    /// dropped, not queued); a one-way cut applies once nothing holds the link.
    fn settle(&self, sim: &mut turmoil::Sim, a: &str, b: &str) {
        let pair = |x: &str, y: &str| (x == a && y == b) || (x == b && y == a);
        let cut = self.cut.iter().any(|(x, y)| pair(x, y))
            || self.flaps.iter().any(|f| f.down && f.a.iter().any(|x| f.b.iter().any(|y| pair(x, y))));
        if cut {
            sim.partition(a, b);
        } else if self.hung.get(a) != self.hung.get(b) {
            sim.hold(a, b);
        } else {
            sim.release(a, b);
            for (x, y) in self.oneway.iter().filter(|(x, y)| pair(x, y)) {
                sim.partition_oneway(x.as_str(), y.as_str());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        sim: &mut turmoil::Sim,
        layout: &Layout,
        registry: &Registry,
        disks: &BTreeMap<String, SimFs>,
        hosts: &[String],
        id: u32,
        f: &Fault,
        primary: &Mode,
        secondary: &Mode,
        set_loss: &dyn Fn(&mut turmoil::Sim, f64),
        now: u64,
    ) -> FaultRec {
        let mut rec = FaultRec { at_ms: now, what: String::new(), down: Vec::new(), up: Vec::new() };
        let target = match f {
            Fault::Crash(t)
            | Fault::Restart(t)
            | Fault::Isolate(t)
            | Fault::IsolateFromCluster(t)
            | Fault::Hang(t)
            | Fault::Resume(t)
            | Fault::SipCut(t) => {
                let v = self.resolve(t, layout, registry, hosts);
                self.resolved.insert(id, v.clone());
                v
            }
            Fault::OneWay { from, .. } | Fault::Link { a: from, .. } => self.resolve(from, layout, registry, hosts),
            _ => Vec::new(),
        };
        let cluster: Vec<String> = layout.nodes.iter().map(|n| n.name.clone()).collect();
        match f {
            Fault::Crash(_) => {
                for n in &target {
                    if self.crashed.insert(n.clone()) {
                        sim.crash(n.as_str());
                        if let Some(d) = disks.get(n) {
                            d.power_cut();
                        }
                        registry.borrow_mut().remove(n);
                    }
                }
                rec.what = format!("crash {target:?}");
                rec.down = Self::out_of_service(layout, &target, false);
                self.down_by.insert(id, rec.down.clone());
            }
            Fault::Restart(_) => {
                for n in &target {
                    if self.crashed.remove(n) {
                        sim.bounce(n.as_str());
                    }
                }
                rec.what = format!("restart {target:?}");
                rec.up = self.undo(f);
            }
            Fault::Isolate(_) | Fault::IsolateFromCluster(_) => {
                let others: Vec<&String> = if matches!(f, Fault::Isolate(_)) { hosts.iter().collect() } else { cluster.iter().collect() };
                for n in &target {
                    for o in &others {
                        if !target.contains(o) {
                            self.cut(sim, n, o);
                        }
                    }
                }
                rec.what = format!("{} {target:?}", if matches!(f, Fault::Isolate(_)) { "isolate" } else { "isolate-from-cluster" });
                rec.down = Self::out_of_service(layout, &target, matches!(f, Fault::IsolateFromCluster(_)));
                self.down_by.insert(id, rec.down.clone());
                self.partitions.push(id);
            }
            Fault::SipCut(_) => {
                // nothing is declared down: the cut node still takes and delivers calls itself;
                // what this asks is that no call waits on a member whose SIP is silent
                for n in &target {
                    for o in cluster.iter().filter(|o| !target.contains(o)) {
                        crate::net::sip_cut(n, o);
                    }
                }
                rec.what = format!("sip-cut {target:?}");
            }
            Fault::Heal => {
                crate::net::sip_heal();
                let mut up = BTreeSet::new();
                let links: Vec<(String, String)> =
                    std::mem::take(&mut self.cut).into_iter().chain(std::mem::take(&mut self.oneway)).collect();
                for (a, b) in links {
                    self.settle(sim, &a, &b);
                }
                for p in std::mem::take(&mut self.partitions) {
                    up.extend(self.down_by.remove(&p).unwrap_or_default());
                }
                rec.what = "heal".into();
                rec.up = up.into_iter().collect();
            }
            Fault::Hang(_) | Fault::Resume(_) => {
                for n in &target {
                    if matches!(f, Fault::Hang(_)) {
                        self.hung.insert(n.clone(), id);
                    } else {
                        self.hung.remove(n);
                    }
                }
                // every link of the step's nodes, those among them too: a node frozen again by a
                // later step may have been held from the rest of this group (seed 990723)
                for n in &target {
                    for o in hosts.iter().filter(|o| *o != n) {
                        self.settle(sim, n, o);
                    }
                }
                if matches!(f, Fault::Hang(_)) {
                    rec.what = format!("hang {target:?}");
                    rec.down = Self::out_of_service(layout, &target, false);
                    self.down_by.insert(id, rec.down.clone());
                } else {
                    rec.what = format!("resume {target:?}");
                    rec.up = self.undo(f);
                }
            }
            Fault::Loss(rate) => {
                set_loss(sim, *rate);
                rec.what = format!("loss {:.0}%", rate * 100.0);
            }
            Fault::Flap { a, b, period_ms, times } => {
                let za: Vec<String> = layout.nodes.iter().filter(|n| &n.zone == a).map(|n| n.name.clone()).collect();
                let zb: Vec<String> = layout.nodes.iter().filter(|n| &n.zone == b).map(|n| n.name.clone()).collect();
                self.flaps.push(Flap {
                    a: za,
                    b: zb,
                    period_ms: *period_ms,
                    until_ms: now + period_ms * u64::from(*times) * 2,
                    down: false,
                });
                rec.what = format!("flap {a}<->{b} every {period_ms} ms");
            }
            Fault::Pbx(which, b) => {
                *(if *which == Pbx::Primary { primary } else { secondary }).borrow_mut() = *b;
                rec.what = format!("pbx {which:?} {b:?}");
            }
            Fault::OneWay { to, .. } => {
                // nothing is declared down: which side loses what depends on who must hear whom,
                // and that is what this fault asks the cluster to work out
                let to = self.resolve(to, layout, registry, hosts);
                for a in &target {
                    for b in to.iter().filter(|b| *b != a) {
                        self.oneway.insert((a.clone(), b.clone()));
                        self.settle(sim, a, b);
                    }
                }
                rec.what = format!("one-way {target:?} -> {to:?}");
            }
            Fault::PbxCrash(which) => {
                if self.crashed.insert(which.host().to_string()) {
                    sim.crash(which.host());
                }
                rec.what = format!("pbx {which:?} crash");
                rec.down = vec![which.host().to_string()];
            }
            Fault::PbxRestart(which) => {
                if self.crashed.remove(which.host()) {
                    sim.bounce(which.host());
                }
                rec.what = format!("pbx {which:?} restart");
                rec.up = vec![which.host().to_string()];
            }
            Fault::Link { b, latency_ms: (lo, hi), loss, .. } => {
                let b = self.resolve(b, layout, registry, hosts);
                let edge = |h: &String| EDGE.contains(&h.as_str());
                for x in &target {
                    for y in b.iter().filter(|y| *y != x) {
                        sim.set_link_latency(x.as_str(), y.as_str(), Duration::from_millis(*lo));
                        sim.set_link_max_message_latency(x.as_str(), y.as_str(), Duration::from_millis(*hi));
                        if edge(x) || edge(y) {
                            sim.set_link_fail_rate(x.as_str(), y.as_str(), *loss);
                        }
                    }
                }
                rec.what = format!("link {target:?} <-> {b:?} {lo}-{hi} ms, {:.0}% loss", loss * 100.0);
            }
            // the caller hands it to the operator agent
            Fault::Operator(_) => {}
        }
        rec
    }

    /// The nodes back in service when `f` (a restart or resume of `Target::Of(step)`) undoes a step.
    fn undo(&mut self, f: &Fault) -> Vec<String> {
        match f {
            Fault::Restart(Target::Of(step)) | Fault::Resume(Target::Of(step)) => self.down_by.remove(step).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Flapping links change state on their period.
    fn flap(&mut self, sim: &mut turmoil::Sim, now: u64) {
        let mut changed = Vec::new();
        for f in &mut self.flaps {
            let want = now < f.until_ms && (now / f.period_ms).is_multiple_of(2);
            if want != f.down {
                f.down = want;
                changed.extend(f.a.iter().flat_map(|x| f.b.iter().map(move |y| (x.clone(), y.clone()))));
            }
        }
        for (x, y) in changed {
            self.settle(sim, &x, &y);
        }
    }
}

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
use crate::faults::Faults;
use crate::net::{dialer, incoming, SimUdp};
use crate::oracle::{OpCmd, Oracle, Pbx};
use crate::scenario::{Fault, Op, Scenario, Target};
use crate::topology::{CLUSTER_PORT, SIP_PORT};
use crate::ua;
use crate::ua::pbx::{Behaviour, Mode};

/// The wall-clock epoch simulated nodes see (2026-01-01T00:00:00Z), so CDR times replay too.
const EPOCH_MS: u64 = 1_767_225_600_000;
/// The hosts at the SIP edge: the only ones whose links get random loss (turmoil's TCP between
/// nodes does not retransmit, so loss there would break connections rather than lose packets).
pub(crate) const EDGE: [&str; 3] = ["carrier", "pbx-p", "pbx-s"];
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

pub(crate) type Registry = Rc<RefCell<BTreeMap<String, Handles>>>;

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
    let engines = crate::faults::Engines::default();
    for n in &layout.nodes {
        let disk = SimFs::default();
        disks.insert(n.name.clone(), disk.clone());
        let mut toml = layout.node_toml(n, sim.lookup(n.name.as_str()));
        if let Some(every) = sc.snapshot_every {
            toml = toml.replace("[cluster]\n", &format!("[cluster]\nsnapshot_every = {every}\n"));
        }
        let cfg = NodeConfig::from_toml(&toml).expect("the simulation's node config is valid");
        let (members, registry, name, witness) = (members.clone(), registry.clone(), n.name.clone(), n.witness);
        let engines = engines.clone();
        let node_seed = seed ^ n.id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // every boot draws new tags and branches, as production's clock-derived seed does: a
        // restarted node must not reuse its previous life's branches towards the same PBX
        let boots = Rc::new(std::cell::Cell::new(0u64));
        sim.host(n.name.as_str(), move || {
            boots.set(boots.get() + 1);
            let node_seed = node_seed ^ boots.get().wrapping_mul(0xd1b5_4a32_d192_ed03);
            let first_boot = boots.get() == 1;
            let (cfg, disk, members, registry, name) = (cfg.clone(), disk.clone(), members.clone(), registry.clone(), name.clone());
            let engines = engines.clone();
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
                    let (freeze_tx, freeze) = tokio::sync::watch::channel(false);
                    engines.borrow_mut().insert(name.clone(), freeze_tx);
                    Some(SipIo { transports, events, cdrs, secret: format!("sim-secret-{name}"), freeze: Some(freeze), thread: None })
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
                    lease_layer: opts.broken.and_then(Broken::lease_layer),
                    resolver: None,
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
    let mut faults = Faults::default();
    faults.engines = engines;
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
    // a second slot held for a forward moved off a node goes back up to Timer B plus the PBX's
    // 2xx window after that forward started (`proxy/second_slot.rs`), which may be later than the
    // scenario's end: wait for the ledger to empty, up to 30 s more; what is still held then is a leak
    let until = t + 30_000;
    step_while(&mut sim, &mut t, &mut error, until, || !ledger_empty(&registry, &faults.crashed));
    // let the last commits reach every live member before their states are read (up to 5 s
    // more): a share given back just before the end is not a leak on a follower that lags by one
    // heartbeat
    let until = t + 5_000;
    step_while(&mut sim, &mut t, &mut error, until, || !converged(&registry, &faults.crashed));
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
/// Run the simulation on while `busy` says so, up to `until` (simulated ms) or an error.
fn step_while(sim: &mut turmoil::Sim, t: &mut u64, error: &mut Option<String>, until: u64, busy: impl Fn() -> bool) {
    while error.is_none() && *t < until && busy() {
        if let Err(e) = sim.step() {
            *error = Some(e.to_string());
            return;
        }
        *t = sim.elapsed().as_millis() as u64;
    }
}

/// No live member's ledger holds a slot or a share of the trunk.
fn ledger_empty(registry: &Registry, crashed: &BTreeSet<String>) -> bool {
    registry
        .borrow()
        .iter()
        .filter(|(n, _)| !crashed.contains(*n))
        .all(|(_, h)| h.consensus.local(|s| s.pool.used(crate::topology::TRUNK) == 0 && s.shares.total(crate::topology::TRUNK) == 0))
}

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

//! Faults as they land on the simulated world: which hosts a step's target names, what turmoil
//! state every link gets from all the faults in force together, crashes and restarts of hosts and
//! their disks, PBX behaviour, and who is out of service for the oracle. `run.rs` owns the world
//! and the schedule; this owns what a fault does to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hatrunk_consensus::disk::crash::SimFs;

use crate::oracle::{FaultRec, Pbx};
use crate::run::{Registry, EDGE};
use crate::scenario::{Fault, Op, Target};
use crate::topology::Layout;
use crate::ua::pbx::Mode;

#[derive(Default)]
pub(crate) struct Faults {
    /// Nodes each fault step hit.
    resolved: BTreeMap<u32, Vec<String>>,
    pub(crate) crashed: BTreeSet<String>,
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
    /// Each running node's switch for its SIP engine ([`Fault::Freeze`]), replaced at every boot.
    pub(crate) engines: Engines,
}

/// Node name -> the switch that freezes its SIP engine.
pub(crate) type Engines = std::rc::Rc<std::cell::RefCell<BTreeMap<String, tokio::sync::watch::Sender<bool>>>>;

/// A link between two groups of nodes that goes down and up every `period_ms` until `until_ms`.
struct Flap {
    a: Vec<String>,
    b: Vec<String>,
    period_ms: u64,
    until_ms: u64,
    down: bool,
}

impl Faults {
    pub(crate) fn resolve(&self, t: &Target, layout: &Layout, registry: &Registry, hosts: &[String]) -> Vec<String> {
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
    pub(crate) fn apply(
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
            | Fault::Freeze(t)
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
            Fault::Freeze(_) => {
                for n in &target {
                    if let Some(engine) = self.engines.borrow().get(n) {
                        let _ = engine.send(true);
                    }
                }
                // out of service for calls only: Raft and heartbeats carry on
                rec.what = format!("freeze-engine {target:?}");
                rec.down = target.clone();
                self.down_by.insert(id, rec.down.clone());
            }
            Fault::Hang(_) | Fault::Resume(_) => {
                if matches!(f, Fault::Resume(_)) {
                    for n in &target {
                        if let Some(engine) = self.engines.borrow().get(n) {
                            let _ = engine.send(false);
                        }
                    }
                }
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
                // sides that overlap cut the shared nodes off both ways: from all to all leaves
                // every node alone (seed 5100665). A node that now hears no member and is heard
                // by none is out, as an isolation from the cluster would make it
                let heard = |a: &String, b: &String| !self.oneway.contains(&(a.clone(), b.clone()));
                let alone: Vec<String> = cluster
                    .iter()
                    .filter(|n| cluster.len() > 1 && cluster.iter().filter(|o| o != n).all(|o| !heard(n, o) && !heard(o, n)))
                    .cloned()
                    .collect();
                if !alone.is_empty() {
                    rec.down = alone;
                    self.down_by.insert(id, rec.down.clone());
                    self.partitions.push(id);
                }
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
            Fault::Operator(Op::Rejoin(node)) => {
                // joining again takes an empty data_dir: the node is stopped, wiped and started;
                // the caller hands the join to the operator agent
                for n in self.resolve(node, layout, registry, hosts).into_iter().take(1) {
                    if !self.crashed.remove(&n) {
                        sim.crash(n.as_str());
                        registry.borrow_mut().remove(&n);
                        // down and up at once: what it was doing is lost (seed 2500427: a
                        // final response it was retransmitting to the carrier)
                        rec.down.push(n.clone());
                    }
                    rec.up.push(n.clone());
                    if let Some(d) = disks.get(&n) {
                        d.wipe();
                    }
                    sim.bounce(n.as_str());
                }
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
    pub(crate) fn flap(&mut self, sim: &mut turmoil::Sim, now: u64) {
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

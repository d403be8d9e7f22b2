//! Scenarios: a layout, a load, a limit, network conditions and a schedule of faults. The named
//! ones are the stories carriers ask about; [`Scenario::random`] derives one from a seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::oracle::Pbx;
use crate::topology::Layout;
use crate::ua::carrier::Load;
use crate::ua::pbx::Behaviour;

/// Who a fault hits. Resolved when it is applied (the leader is whoever leads then).
#[derive(Debug, Clone)]
pub enum Target {
    /// Hosts by name: nodes, or `carrier`, `pbx-p`, `pbx-s`.
    Nodes(Vec<String>),
    /// Every host (a one-way partition's far side: "nobody reaches the leader").
    All,
    Zone(String),
    Region(String),
    Leader,
    /// The region the leader is in at that moment.
    LeaderRegion,
    /// Whoever fault step `id` hit (to undo exactly that).
    Of(u32),
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Power off (unflushed writes lost).
    Crash(Target),
    /// Start again the nodes crashed earlier.
    Restart(Target),
    /// Cut off from every other host (nodes, carrier, PBXes).
    Isolate(Target),
    /// Cut off from the other cluster nodes only; carrier and PBXes still reach it.
    IsolateFromCluster(Target),
    /// SIP between the target and the other cluster nodes is dropped; their gRPC (Raft, heartbeats)
    /// still flows, and carrier and PBXes still reach it: a firewall rule on the SIP port between
    /// members. Undone by [`Fault::Heal`].
    SipCut(Target),
    /// Frozen, as under `kill -STOP`: nothing in or out until resumed, then all of it at once.
    Hang(Target),
    /// The SIP engine stops (a deadlock, a stuck loop): its messages queue and its timers wait
    /// while its Raft and heartbeats carry on; the member probes see its SIP silent. Undone by
    /// [`Fault::Resume`], when it handles all of it at once.
    Freeze(Target),
    Resume(Target),
    /// Traffic from `from` to `to` is dropped; the other way still flows (a one-way partition, as
    /// a broken route or a firewall rule in one direction makes). Undone by [`Fault::Heal`].
    OneWay {
        from: Target,
        to: Target,
    },
    /// Undo every partition.
    Heal,
    /// Packet loss on every link.
    Loss(f64),
    /// The link between two zones goes down and comes back every `period_ms`, `times` times.
    Flap {
        a: String,
        b: String,
        period_ms: u64,
        times: u32,
    },
    Pbx(Pbx, Behaviour),
    /// The PBX's host goes away (power loss): it forgets its calls and answers nothing.
    PbxCrash(Pbx),
    /// The PBX's host starts again, with no memory of earlier calls.
    PbxRestart(Pbx),
    /// An operator's action through the admin API, carried out by the operator agent when due.
    Operator(Op),
    /// Set the latency range (ms) of every link between `a` and `b`, and their loss rate where one
    /// end is the carrier or a PBX (turmoil's TCP does not retransmit, so loss between nodes would
    /// break connections rather than lose packets).
    Link {
        a: Target,
        b: Target,
        latency_ms: (u64, u64),
        loss: f64,
    },
}

/// What an operator does to a running cluster (issue 18: the limit through operator actions).
#[derive(Debug, Clone)]
pub enum Op {
    /// `cluster remove` of the first node of the target (a live one is drained first unless `force`;
    /// a crashed one is removed at once). It stays out for the rest of the run.
    Remove { node: Target, force: bool },
    /// `cluster join` of the first node of the target again (after its removal), same id.
    Rejoin(Target),
    /// `cluster transfer-leader` to the first node of the target.
    TransferLeader(Target),
    /// Apply the trunk again with this limit (calls up).
    SetLimit(u32),
    /// `trunk delete --force` with calls up, then apply it again at once.
    DeleteRecreate,
    /// A trunk write that read the trunk at its first revision, landing after newer writes (a
    /// delayed second writer): it must be refused, and the trunk must end as last acknowledged.
    StaleWrite,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub about: String,
    pub layout: Layout,
    pub limit: u32,
    pub load: Load,
    /// Base loss rate and the latency range of every link (ms).
    pub loss: f64,
    pub latency_ms: (u64, u64),
    /// (when, step id, fault), in time order.
    pub faults: Vec<(u64, u32, Fault)>,
    /// When the run ends (simulated ms): late enough for every call and every slot to settle.
    pub end_ms: u64,
    /// `[cluster] snapshot_every` of every node, when lower than the default: snapshots are then
    /// built during the run and sent to nodes that fell behind.
    pub snapshot_every: Option<u64>,
}

/// Seconds to milliseconds, for readable schedules.
const fn s(x: u64) -> u64 {
    x * 1000
}

fn base(name: &str, about: &str, layout: &str, limit: u32, rate: f64, load_s: u64) -> Scenario {
    let layout = Layout::named(layout).expect("a known layout");
    Scenario {
        name: name.into(),
        about: about.into(),
        layout,
        limit,
        load: Load { start_ms: s(3), end_ms: s(3 + load_s), rate, hold_ms: (1000, 4000) },
        loss: 0.0,
        latency_ms: (1, 5),
        faults: Vec::new(),
        end_ms: s(3 + load_s) + s(45),
        snapshot_every: None,
    }
}

fn nodes(v: &[&str]) -> Target {
    Target::Nodes(v.iter().map(|s| s.to_string()).collect())
}

impl Scenario {
    pub fn names() -> Vec<&'static str> {
        vec![
            "steady",
            "2t-zone-loss",
            "4t-region-loss-with-leader",
            "leader-isolated-under-load",
            "minority-partition-live-calls",
            "witness-loss",
            "flapping-zone-link",
            "pbx-primary-silent",
            "pbx-primary-fails-503",
            "pbx-primary-busy-486",
            "whole-cluster-restart",
            "power-loss",
            "hung-node",
            "sip-only-partition",
            "frozen-engine",
            "node-lost-for-good",
            "snapshot-install",
            "remove-rejoin",
            "lossy-network",
            "one-way-zone-link",
            "leader-deaf",
            "pbx-primary-crash",
            "slow-region-link",
            "2t4t-region-loss",
            "remove-live-node",
            "remove-dead-node",
            "lower-limit",
            "delete-recreate-trunk",
            "stale-writer",
            "transfer-leader",
        ]
    }

    pub fn named(name: &str) -> Option<Scenario> {
        let mut sc = match name {
            "steady" => base(name, "2T, no fault: the baseline every invariant must hold on", "2t", 12, 6.0, 20),
            "2t-zone-loss" => {
                let mut sc = base(name, "2T: zone sg1-a crashes under load and returns", "2t", 12, 6.0, 30);
                sc.faults = vec![(s(10), 0, Fault::Crash(Target::Zone("sg1-a".into()))), (s(22), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "4t-region-loss-with-leader" => {
                let mut sc = base(name, "4T: the region holding the Raft leader crashes, then returns", "4t", 12, 6.0, 30);
                sc.faults = vec![(s(10), 0, Fault::Crash(Target::LeaderRegion)), (s(22), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "leader-isolated-under-load" => {
                let mut sc = base(name, "2T: the leader is cut off from everyone while calls flow", "2t", 10, 8.0, 30);
                sc.faults = vec![(s(10), 0, Fault::Isolate(Target::Leader)), (s(20), 1, Fault::Heal)];
                sc
            }
            "minority-partition-live-calls" => {
                let mut sc = base(name, "2T: zone sg1-b loses the cluster but not the carrier or PBXes, with calls up", "2t", 12, 6.0, 30);
                sc.load.hold_ms = (3000, 8000);
                sc.faults = vec![(s(10), 0, Fault::IsolateFromCluster(Target::Zone("sg1-b".into()))), (s(20), 1, Fault::Heal)];
                sc
            }
            "witness-loss" => {
                let mut sc = base(name, "2T: the witness crashes; quorum holds without it", "2t", 12, 6.0, 25);
                sc.faults = vec![(s(8), 0, Fault::Crash(nodes(&["sg1-c-w"]))), (s(20), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "flapping-zone-link" => {
                let mut sc = base(name, "2T: the link between zones sg1-a and sg1-b drops every 1.5 s", "2t", 12, 6.0, 30);
                sc.faults = vec![(s(8), 0, Fault::Flap { a: "sg1-a".into(), b: "sg1-b".into(), period_ms: 1500, times: 8 })];
                sc
            }
            "pbx-primary-silent" => {
                let mut sc = base(name, "2T: the Primary PBX stops answering mid-load (Auto Fail-over on silence)", "2t", 12, 6.0, 25);
                sc.faults =
                    vec![(s(8), 0, Fault::Pbx(Pbx::Primary, Behaviour::Silent)), (s(18), 1, Fault::Pbx(Pbx::Primary, Behaviour::Answer))];
                sc
            }
            "pbx-primary-fails-503" => {
                let mut sc = base(name, "2T: the Primary PBX answers 503 (Auto Fail-over on a code)", "2t", 12, 6.0, 20);
                sc.faults = vec![
                    (s(8), 0, Fault::Pbx(Pbx::Primary, Behaviour::Fail(503))),
                    (s(16), 1, Fault::Pbx(Pbx::Primary, Behaviour::Answer)),
                ];
                sc
            }
            "pbx-primary-busy-486" => {
                let mut sc = base(name, "2T: the Primary PBX answers 486 Busy, which must not fail over", "2t", 12, 6.0, 20);
                sc.faults = vec![
                    (s(8), 0, Fault::Pbx(Pbx::Primary, Behaviour::Fail(486))),
                    (s(16), 1, Fault::Pbx(Pbx::Primary, Behaviour::Answer)),
                ];
                sc
            }
            "whole-cluster-restart" => {
                let mut sc = base(name, "2T: every node loses power at once and comes back", "2t", 12, 6.0, 30);
                let all = Target::Nodes(sc.layout.nodes.iter().map(|n| n.name.clone()).collect());
                sc.faults = vec![(s(10), 0, Fault::Crash(all)), (s(14), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "power-loss" => {
                // the operator writes a change every few seconds and calls hold for up to 8 s: the
                // cut lands with calls up and changes in flight; acknowledged ones must survive it
                let mut sc =
                    base(name, "4T: every node loses power at once with calls up and configuration being written", "4t", 12, 8.0, 30);
                sc.load.hold_ms = (3000, 8000);
                let all = Target::Nodes(sc.layout.nodes.iter().map(|n| n.name.clone()).collect());
                sc.faults = vec![(s(10) + 730, 0, Fault::Crash(all)), (s(13), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "remove-live-node" => {
                let mut sc = base(name, "2T: the operator removes sg1-b2 while it carries calls (drained first)", "2t", 12, 6.0, 25);
                sc.load.hold_ms = (3000, 8000);
                sc.faults = vec![(s(10), 0, Fault::Operator(Op::Remove { node: nodes(&["sg1-b2"]), force: false }))];
                sc
            }
            "remove-dead-node" => {
                let mut sc = base(name, "2T: sg1-a2 dies with calls up and the operator removes it", "2t", 12, 6.0, 25);
                sc.load.hold_ms = (3000, 8000);
                sc.faults = vec![
                    (s(9), 0, Fault::Crash(nodes(&["sg1-a2"]))),
                    (s(11), 1, Fault::Operator(Op::Remove { node: nodes(&["sg1-a2"]), force: false })),
                ];
                sc
            }
            "lower-limit" => {
                let mut sc = base(name, "2T: the limit goes from 12 to 4 with calls up, then back", "2t", 12, 8.0, 25);
                sc.load.hold_ms = (3000, 8000);
                // raised once the lowered limit has been judged for a while: it applies `SETTLE_MS` (the
                // lease and half a second) after the change
                sc.faults = vec![(s(10), 0, Fault::Operator(Op::SetLimit(4))), (s(21), 1, Fault::Operator(Op::SetLimit(12)))];
                sc
            }
            "delete-recreate-trunk" => {
                let mut sc = base(name, "4T: the trunk is deleted (forced) with calls up and re-created at once", "4t", 10, 8.0, 25);
                sc.load.hold_ms = (3000, 8000);
                sc.faults = vec![(s(10), 0, Fault::Operator(Op::DeleteRecreate))];
                sc
            }
            "stale-writer" => {
                let mut sc =
                    base(name, "2T: a second writer's change, made on an older revision, lands after a newer one", "2t", 12, 6.0, 20);
                sc.faults = vec![(s(8), 0, Fault::Operator(Op::StaleWrite))];
                sc
            }
            "transfer-leader" => {
                let mut sc = base(name, "4T: leadership moves to the other region under load, twice", "4t", 12, 6.0, 25);
                sc.faults = vec![
                    (s(8), 0, Fault::Operator(Op::TransferLeader(Target::Region("hk1".into())))),
                    (s(16), 1, Fault::Operator(Op::TransferLeader(Target::Region("sg1".into())))),
                ];
                sc
            }
            "hung-node" => {
                // frozen past its lease and the lapse (7.7 s after its last renewal), so it resumes lapsed
                let mut sc = base(name, "2T: sg1-a1 freezes (kill -STOP) for 10 s, then resumes", "2t", 12, 6.0, 25);
                sc.faults = vec![(s(8), 0, Fault::Hang(nodes(&["sg1-a1"]))), (s(18), 1, Fault::Resume(Target::Of(0)))];
                sc
            }
            "remove-rejoin" => {
                let mut sc =
                    base(name, "2T: sg1-b1 is drained and removed with calls up, then joins again under the same id", "2t", 12, 6.0, 30);
                sc.faults = vec![
                    (s(9), 0, Fault::Operator(Op::Remove { node: nodes(&["sg1-b1"]), force: false })),
                    (s(18), 1, Fault::Operator(Op::Rejoin(nodes(&["sg1-b1"])))),
                ];
                sc
            }
            "snapshot-install" => {
                let mut sc = base(name, "2T: a snapshot every 20 entries; sg1-b2 is down 12 s and must be sent one", "2t", 12, 6.0, 25);
                sc.snapshot_every = Some(20);
                sc.faults = vec![(s(8), 0, Fault::Crash(nodes(&["sg1-b2"]))), (s(20), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            "node-lost-for-good" => {
                // the carrier's first entry admits every call; 2 calls/s of 2.5 s keep ~5 up there
                // against 8 when it dies. The calls it admitted stay held (their BYEs went to it),
                // and so may its lease headroom; the rest must come back to the next entry.
                // Load runs past the longest call's duration after the lease lapsed, when the lost
                // node may hold nothing at all any more.
                let mut sc = base(name, "2T: the first entry dies with calls up and never returns", "2t", 8, 2.0, 55);
                sc.faults = vec![(s(8), 0, Fault::Crash(nodes(&["sg1-a1"])))];
                sc
            }
            "frozen-engine" => {
                let mut sc = base(
                    name,
                    "2T: sg1-a1's SIP engine freezes for 6 s under load while its Raft and heartbeats carry on, then handles its backlog",
                    "2t",
                    12,
                    6.0,
                    25,
                );
                sc.faults = vec![(s(8), 0, Fault::Freeze(nodes(&["sg1-a1"]))), (s(14), 1, Fault::Resume(Target::Of(0)))];
                sc
            }
            "sip-only-partition" => {
                let mut sc = base(
                    name,
                    "2T: SIP between zone sg1-b and the rest is dropped for 10 s while gRPC flows, under load",
                    "2t",
                    12,
                    6.0,
                    30,
                );
                sc.faults = vec![(s(10), 0, Fault::SipCut(Target::Zone("sg1-b".into()))), (s(20), 1, Fault::Heal)];
                sc
            }
            "lossy-network" => {
                let mut sc = base(name, "4T: 5% loss on every link and 20-60 ms latency, at the limit", "4t", 6, 8.0, 25);
                sc.loss = 0.05;
                sc.latency_ms = (20, 60);
                sc
            }
            "one-way-zone-link" => {
                let mut sc = base(name, "2T: zone sg1-a's packets to sg1-b are dropped, the other way still flows", "2t", 12, 6.0, 30);
                let (a, b) = (Target::Zone("sg1-a".into()), Target::Zone("sg1-b".into()));
                sc.faults = vec![(s(10), 0, Fault::OneWay { from: a, to: b }), (s(20), 1, Fault::Heal)];
                sc
            }
            "leader-deaf" => {
                let mut sc = base(name, "2T: nothing reaches the leader while it still sends (one-way), under load", "2t", 12, 6.0, 30);
                sc.faults = vec![(s(10), 0, Fault::OneWay { from: Target::All, to: Target::Leader }), (s(20), 1, Fault::Heal)];
                sc
            }
            "pbx-primary-crash" => {
                let mut sc = base(name, "2T: the Primary PBX's host dies with calls up and comes back empty", "2t", 12, 6.0, 25);
                sc.load.hold_ms = (2000, 6000);
                sc.faults = vec![(s(8), 0, Fault::PbxCrash(Pbx::Primary)), (s(16), 1, Fault::PbxRestart(Pbx::Primary))];
                sc
            }
            "slow-region-link" => {
                let mut sc =
                    base(name, "4T: the sg1-hk1 link slows to 150-300 ms with 3% loss at the PBX edge, then recovers", "4t", 10, 8.0, 30);
                let (a, b) = (Target::Region("sg1".into()), Target::Region("hk1".into()));
                let edge = nodes(&["pbx-p", "pbx-s", "carrier"]);
                sc.faults = vec![
                    (s(8), 0, Fault::Link { a: a.clone(), b: b.clone(), latency_ms: (150, 300), loss: 0.0 }),
                    (s(8), 1, Fault::Link { a: Target::Region("hk1".into()), b: edge.clone(), latency_ms: (150, 300), loss: 0.03 }),
                    (s(22), 2, Fault::Link { a, b, latency_ms: sc.latency_ms, loss: 0.0 }),
                    (s(22), 3, Fault::Link { a: Target::Region("hk1".into()), b: edge, latency_ms: sc.latency_ms, loss: 0.0 }),
                ];
                sc
            }
            "2t4t-region-loss" => {
                let mut sc = base(name, "2T+4T: region hk1 (both its zones) crashes under load, then returns", "2t+4t", 12, 8.0, 30);
                sc.faults = vec![(s(10), 0, Fault::Crash(Target::Region("hk1".into()))), (s(22), 1, Fault::Restart(Target::Of(0)))];
                sc
            }
            _ => return None,
        };
        sc.faults.sort_by_key(|(t, id, _)| (*t, *id));
        Some(sc)
    }

    /// A scenario derived from `seed`: layout, limit, load, network and one to three faults, each
    /// undone before the load stops.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = SmallRng::seed_from_u64(seed);
        let layout = if rng.gen_bool(0.5) { "2t" } else { "4t" };
        let limit = rng.gen_range(3..=15);
        let rate = rng.gen_range(2.0..10.0);
        let load_s = 20;
        let mut sc = base(&format!("seed-{seed}"), "random faults from the seed", layout, limit, rate, load_s);
        sc.load.hold_ms = (rng.gen_range(500..2000), rng.gen_range(2000..6000));
        sc.loss = if rng.gen_bool(0.3) { rng.gen_range(0.0..0.05) } else { 0.0 };
        sc.latency_ms = (1, rng.gen_range(5..50));
        // from a stream of its own, so the draws above and below stay what they were
        let mut snap = SmallRng::seed_from_u64(seed ^ 0x5eed_5a95);
        if snap.gen_bool(0.3) {
            sc.snapshot_every = Some(snap.gen_range(20..200));
        }
        let names: Vec<String> = sc.layout.nodes.iter().map(|n| n.name.clone()).collect();
        let zones = sc.layout.zones();
        let regions = sc.layout.regions();
        let n = rng.gen_range(1..=3);
        for i in 0..n {
            let id = 2 * i as u32;
            let at = rng.gen_range(s(5)..s(3 + load_s - 8));
            let len = rng.gen_range(s(2)..s(7));
            let pick = |rng: &mut SmallRng| -> Target {
                match rng.gen_range(0..4) {
                    0 => Target::Nodes(vec![names[rng.gen_range(0..names.len())].clone()]),
                    1 => Target::Zone(zones[rng.gen_range(0..zones.len())].clone()),
                    2 => Target::Region(regions[rng.gen_range(0..regions.len())].clone()),
                    _ => Target::Leader,
                }
            };
            let (start, stop) = match rng.gen_range(0..11) {
                0 => {
                    // a quarter of crashes are a power loss of the whole cluster at once
                    let t = if rng.gen_bool(0.25) { Target::Nodes(names.clone()) } else { pick(&mut rng) };
                    (Fault::Crash(t), Fault::Restart(Target::Of(id)))
                }
                1 => (Fault::Isolate(pick(&mut rng)), Fault::Heal),
                2 => (Fault::IsolateFromCluster(pick(&mut rng)), Fault::Heal),
                3 => (Fault::Hang(pick(&mut rng)), Fault::Resume(Target::Of(id))),
                4 => {
                    let b = [Behaviour::Silent, Behaviour::Fail(503), Behaviour::Fail(486), Behaviour::Fail(408)][rng.gen_range(0..4)];
                    (Fault::Pbx(Pbx::Primary, b), Fault::Pbx(Pbx::Primary, Behaviour::Answer))
                }
                5 => (Fault::Loss(rng.gen_range(0.05..0.2)), Fault::Loss(sc.loss)),
                6 => (Fault::OneWay { from: pick(&mut rng), to: pick(&mut rng) }, Fault::Heal),
                7 => (Fault::PbxCrash(Pbx::Primary), Fault::PbxRestart(Pbx::Primary)),
                8 => {
                    // an operator action; its undo (where it has one) a few seconds later
                    let sip: Vec<String> = sc.layout.sip_nodes().map(|n| n.name.clone()).collect();
                    let node = Target::Nodes(vec![sip[rng.gen_range(0..sip.len())].clone()]);
                    match rng.gen_range(0..5) {
                        0 => {
                            let undo = if rng.gen_bool(0.5) { Op::Rejoin(node.clone()) } else { Op::SetLimit(limit) };
                            (Fault::Operator(Op::Remove { node, force: rng.gen_bool(0.3) }), Fault::Operator(undo))
                        }
                        1 => (Fault::Operator(Op::SetLimit(rng.gen_range(1..limit.max(2)))), Fault::Operator(Op::SetLimit(limit))),
                        2 => (Fault::Operator(Op::DeleteRecreate), Fault::Operator(Op::SetLimit(limit))),
                        3 => (Fault::Operator(Op::StaleWrite), Fault::Operator(Op::SetLimit(limit))),
                        _ => (Fault::Operator(Op::TransferLeader(node)), Fault::Operator(Op::SetLimit(limit))),
                    }
                }
                9 => (Fault::SipCut(pick(&mut rng)), Fault::Heal),
                _ => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    let slow = (rng.gen_range(50..200), rng.gen_range(200..400));
                    let base = sc.latency_ms;
                    (
                        Fault::Link { a: a.clone(), b: b.clone(), latency_ms: slow, loss: 0.0 },
                        Fault::Link { a, b, latency_ms: base, loss: 0.0 },
                    )
                }
            };
            sc.faults.push((at, id, start));
            sc.faults.push((at + len, id + 1, stop));
        }
        // a frozen SIP engine in one seed of ten, from a stream of its own (as above): the seeds
        // named in the docs keep the faults they were found with, bar one in ten
        let mut frz = SmallRng::seed_from_u64(seed ^ 0xf2ee_2e00);
        if frz.gen_bool(0.1) {
            let sip: Vec<String> = sc.layout.sip_nodes().map(|n| n.name.clone()).collect();
            let node = sip[frz.gen_range(0..sip.len())].clone();
            let at = frz.gen_range(s(5)..s(3 + load_s - 8));
            sc.faults.push((at, 6, Fault::Freeze(Target::Nodes(vec![node]))));
            sc.faults.push((at + frz.gen_range(s(2)..s(7)), 7, Fault::Resume(Target::Of(6))));
        }
        sc.faults.sort_by_key(|(t, id, _)| (*t, *id));
        sc
    }
}

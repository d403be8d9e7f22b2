//! The operator: applies the scenario's trunk through the admin API as soon as the cluster takes
//! it, then a configuration change every few seconds for the whole run, each to the next node in
//! turn. A change counts as acknowledged only when the API said so; those must never be lost.

use std::rc::Rc;
use std::time::Duration;

use hatrunk_node::admin::pb::admin_client::AdminClient;
use hatrunk_node::admin::pb::ApplyTrunkRequest;

use crate::oracle::{now_ms, OpCmd, Shared};
use crate::topology::{revision_toml, trunk_toml, Layout, CLUSTER_PORT};

pub struct Plan {
    pub limit: u32,
    /// Stop making changes after this (the run's quiet tail).
    pub until_ms: u64,
    /// Read `cluster status` from this node at this time too.
    pub read_status: Option<(&'static str, u64)>,
}

pub async fn run(plan: Plan, oracle: Shared, layout: Rc<Layout>) -> turmoil::Result {
    let dial = crate::net::dialer();
    let nodes: Vec<String> = layout.sip_nodes().map(|n| n.name.clone()).collect();
    let trunk = trunk_toml(plan.limit, layout.ha, turmoil::lookup("pbx-p"), turmoil::lookup("pbx-s"));
    let mut turn = 0usize;
    if let Some((node, at)) = plan.read_status {
        let (dial, oracle) = (dial.clone(), oracle.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
            let seen = status(&dial, node).await;
            oracle.borrow_mut().status_seen = seen.ok();
        });
    }
    {
        let (dial, oracle, layout, nodes) = (dial.clone(), oracle.clone(), layout.clone(), nodes.clone());
        tokio::task::spawn_local(async move { ops(dial, oracle, layout, nodes, plan.limit).await });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // the trunk itself, retried until a node acknowledges it
    loop {
        let node = &nodes[turn % nodes.len()];
        turn += 1;
        if apply(&dial, node, &trunk).await.is_ok() {
            let mut o = oracle.borrow_mut();
            o.log(format!("operator trunk acked by {node}"));
            o.trunk_ready_ms = Some(now_ms());
            o.config_acked.push((crate::topology::TRUNK.to_string(), now_ms()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut rev = 0u32;
    while now_ms() < plan.until_ms {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        rev += 1;
        let node = &nodes[turn % nodes.len()];
        turn += 1;
        let r = apply(&dial, node, &revision_toml(rev)).await;
        let mut o = oracle.borrow_mut();
        match r {
            Ok(()) => {
                o.log(format!("operator cfg-{rev} acked by {node}"));
                o.config_acked.push((format!("cfg-{rev}"), now_ms()));
            }
            Err(e) => o.log(format!("operator cfg-{rev} refused by {node}: {}", e.lines().next().unwrap_or(""))),
        }
    }
    Ok(())
}

/// Each member's health as `node` reports it.
async fn status(dial: &hatrunk_consensus::network::Dialer, node: &str) -> Result<std::collections::BTreeMap<String, bool>, String> {
    let ch = dial(&format!("{}:{CLUSTER_PORT}", turmoil::lookup(node)))?;
    let mut c = AdminClient::new(ch);
    let r = c.cluster_status(hatrunk_node::admin::pb::Empty {}).await.map_err(|s| s.message().to_string())?;
    Ok(r.into_inner().members.into_iter().map(|m| (m.name, m.healthy)).collect())
}

async fn apply(dial: &hatrunk_consensus::network::Dialer, node: &str, toml: &str) -> Result<(), String> {
    apply_at(dial, node, toml).await.map(|_| ())
}

/// Apply a trunk file; the trunk's new revision.
async fn apply_at(dial: &hatrunk_consensus::network::Dialer, node: &str, toml: &str) -> Result<u64, String> {
    let mut c = client(dial, node)?;
    let mut r = tonic::Request::new(ApplyTrunkRequest { toml: toml.to_string(), force: false });
    r.set_timeout(Duration::from_secs(5));
    match tokio::time::timeout(Duration::from_secs(5), c.apply_trunk(r)).await {
        Ok(Ok(r)) => Ok(r.into_inner().revision),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn client(dial: &hatrunk_consensus::network::Dialer, node: &str) -> Result<AdminClient<tonic::transport::Channel>, String> {
    Ok(AdminClient::new(dial(&format!("{}:{CLUSTER_PORT}", turmoil::lookup(node)))?))
}

/// Carry out the operator actions the scenario schedules (`Fault::Operator`), one at a time, each
/// through the first member that answers.
async fn ops(dial: hatrunk_consensus::network::Dialer, oracle: Shared, layout: Rc<Layout>, nodes: Vec<String>, base_limit: u32) {
    let mut turn = 0usize;
    loop {
        let next = oracle.borrow_mut().ops_due.pop_front();
        let Some(cmd) = next else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let t0 = now_ms();
        let mut tries = 0;
        let result = loop {
            let live: Vec<&String> = {
                let o = oracle.borrow();
                nodes.iter().filter(|n| !o.removed.contains(*n)).collect()
            };
            let node = live[turn % live.len().max(1)].clone();
            turn += 1;
            tries += 1;
            match op(&dial, &oracle, &layout, &node, &cmd, base_limit).await {
                Ok(done) => break Ok(done),
                Err(e) if tries < 20 && now_ms() < t0 + 60_000 => {
                    oracle.borrow_mut().log(format!("operator {cmd:?} via {node}: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => break Err(e),
            }
        };
        let mut o = oracle.borrow_mut();
        match result {
            Ok(done) => o.log(format!("operator {cmd:?}: {done}")),
            Err(e) => o.log(format!("operator {cmd:?} gave up: {e}")),
        }
    }
}

/// One try of `cmd` through `node`: what it did, or why it failed (then it is tried again).
async fn op(
    dial: &hatrunk_consensus::network::Dialer,
    oracle: &Shared,
    layout: &Layout,
    node: &str,
    cmd: &OpCmd,
    base_limit: u32,
) -> Result<String, String> {
    let trunk = |limit: u32| trunk_toml(limit, layout.ha, turmoil::lookup("pbx-p"), turmoil::lookup("pbx-s"));
    let current = || oracle.borrow().trunk_acked.unwrap_or(base_limit);
    let timeout = Duration::from_secs(20);
    match cmd {
        OpCmd::Remove { id, name, force } => {
            let mut c = client(dial, node)?;
            let req = hatrunk_node::admin::pb::RemoveRequest { id: *id, force: *force, cancel: false };
            match tokio::time::timeout(timeout, c.cluster_remove(req)).await {
                Ok(Ok(_)) => {
                    oracle.borrow_mut().removed.insert(name.clone());
                    Ok(format!("{name} removed"))
                }
                Ok(Err(s)) => Err(s.message().to_string()),
                Err(_) => Err("timed out".into()),
            }
        }
        OpCmd::Rejoin { name } => {
            let mut c = client(dial, node)?;
            let addr = format!("{}:{}", turmoil::lookup(name.as_str()), crate::topology::CLUSTER_PORT);
            match tokio::time::timeout(timeout, c.cluster_join(hatrunk_node::admin::pb::JoinRequest { addr, learner: false })).await {
                Ok(Ok(_)) => {
                    oracle.borrow_mut().removed.remove(name);
                    Ok(format!("{name} joined again"))
                }
                Ok(Err(s)) => Err(s.message().to_string()),
                Err(_) => Err("timed out".into()),
            }
        }
        OpCmd::TransferLeader { id } => {
            let mut c = client(dial, node)?;
            match tokio::time::timeout(timeout, c.transfer_leader(hatrunk_node::admin::pb::NodeId { id: *id })).await {
                Ok(Ok(_)) => Ok(format!("leadership to {id}")),
                // a transfer that did not happen is not retried: leadership moves on its own too
                Ok(Err(s)) => Ok(format!("transfer refused: {}", s.message())),
                Err(_) => Ok("transfer timed out".into()),
            }
        }
        OpCmd::SetLimit(n) => {
            let sent = now_ms();
            write(oracle, sent, Some(*n), apply_at(dial, node, &trunk(*n)).await).map(|r| format!("limit {n} at revision {r}"))
        }
        OpCmd::DeleteRecreate => {
            let mut c = client(dial, node)?;
            let req = hatrunk_node::admin::pb::DeleteTrunkRequest { id: crate::topology::TRUNK.into(), force: true };
            oracle.borrow_mut().trunk_deleted.push(now_ms());
            match tokio::time::timeout(Duration::from_secs(5), c.delete_trunk(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) => return Err(s.message().to_string()),
                Err(_) => return Err("delete timed out".into()),
            }
            let n = current();
            oracle.borrow_mut().trunk_acked = None;
            // re-created at once, calls up; retried by the caller until it is acknowledged
            let mut last = String::new();
            for _ in 0..20 {
                let sent = now_ms();
                match write(oracle, sent, Some(n), apply_at(dial, node, &trunk(n)).await) {
                    Ok(r) => return Ok(format!("deleted and re-created at revision {r}")),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(format!("not re-created: {last}"))
        }
        OpCmd::StaleWrite => {
            // a first writer reads the trunk, a second changes it; the first writer's change, made
            // on what it read, lands after that and must be refused
            let n = current();
            let sent = now_ms();
            let read = write(oracle, sent, Some(n), apply_at(dial, node, &trunk(n)).await)?;
            let sent = now_ms();
            write(oracle, sent, Some(n), apply_at(dial, node, &trunk(n)).await)?;
            let stale = format!("revision = {read}\n{}", trunk(n + 7));
            match apply_at(dial, node, &stale).await {
                Ok(r) => {
                    let mut o = oracle.borrow_mut();
                    o.stale_acked.push(format!("a write read at revision {read} acknowledged at revision {r} after a newer one"));
                    o.trunk_acked = Some(n + 7);
                    o.limits.push((now_ms(), Some(now_ms()), n + 7));
                    Ok("stale write acknowledged".into())
                }
                Err(e) => Ok(format!("stale write refused: {e}")),
            }
        }
    }
}

/// Record a write of the main trunk's limit and its outcome.
fn write(oracle: &Shared, sent: u64, limit: Option<u32>, r: Result<u64, String>) -> Result<u64, String> {
    let mut o = oracle.borrow_mut();
    let now = now_ms();
    if let Some(n) = limit {
        o.limits.push((sent, r.as_ref().ok().map(|_| now), n));
        if r.is_ok() {
            o.trunk_acked = Some(n);
        }
    }
    r
}

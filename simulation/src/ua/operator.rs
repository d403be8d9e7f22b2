//! The operator: applies the scenario's trunk through the admin API as soon as the cluster takes
//! it, then a configuration change every few seconds for the whole run, each to the next node in
//! turn. A change counts as acknowledged only when the API said so; those must never be lost.

use std::rc::Rc;
use std::time::Duration;

use hatrunk_node::admin::pb::admin_client::AdminClient;
use hatrunk_node::admin::pb::ApplyTrunkRequest;

use crate::oracle::{now_ms, Shared};
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
    let ch = dial(&format!("{}:{CLUSTER_PORT}", turmoil::lookup(node)))?;
    let mut c = AdminClient::new(ch);
    let mut r = tonic::Request::new(ApplyTrunkRequest { toml: toml.to_string(), force: false });
    r.set_timeout(Duration::from_secs(5));
    match tokio::time::timeout(Duration::from_secs(5), c.apply_trunk(r)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err("timed out".into()),
    }
}

//! Printing replies: aligned tables for people, JSON for scripts (`-o json`).

use hatrunk_node::admin::pb;
use serde_json::{json, Value};

use crate::Format;

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().enumerate().map(|(i, c)| format!("{:<1$}", c, w[i])).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

fn trunk_value(r: &pb::TrunkReply) -> Value {
    let mut t = parse(&r.trunk_json);
    t["state"] = parse(&r.state_json);
    t
}

pub fn trunk(r: &pb::TrunkReply, fmt: Format, verb: &str) {
    let v = trunk_value(r);
    if fmt == Format::Json {
        println!("{v}");
        return;
    }
    if !verb.is_empty() {
        println!("trunk {} {verb}", v["id"].as_str().unwrap_or(""));
    }
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    for k in [
        "id",
        "revision",
        "numbers",
        "max_concurrent_calls",
        "mode",
        "advanced_ha",
        "primary_region",
        "failover_policy",
        "failover_timeout_ms",
    ] {
        println!("{k:<22}{}", s(&v[k]));
    }
    for acc in ["primary", "secondary"] {
        if v[acc].is_null() {
            continue;
        }
        let a = &v[acc];
        let st = &v["state"][acc];
        let target = if a["auth"] == "digest" { format!("user {}", s(&a["username"])) } else { s(&a["target"]) };
        println!(
            "{acc:<22}{} ({}, {}, {target}) health={} registered={}",
            s(&a["label"]),
            s(&a["auth"]),
            s(&a["transport"]),
            s(&st["health"]),
            s(&st["registered"])
        );
    }
}

pub fn trunks(r: &pb::TrunkList, fmt: Format) {
    let all: Vec<Value> = r.trunks.iter().map(trunk_value).collect();
    if fmt == Format::Json {
        println!("{}", Value::Array(all));
        return;
    }
    let rows = all
        .iter()
        .map(|t| {
            vec![
                t["id"].as_str().unwrap_or("").to_string(),
                t["mode"].as_str().unwrap_or("").to_string(),
                t["max_concurrent_calls"].to_string(),
                t["numbers"].as_array().map(|a| a.len()).unwrap_or(0).to_string(),
                t["advanced_ha"].as_str().unwrap_or("").to_string(),
                t["revision"].to_string(),
            ]
        })
        .collect();
    table(&["ID", "MODE", "LIMIT", "NUMBERS", "ADVANCED_HA", "REVISION"], rows);
}

pub fn calls(r: &pb::CallsReply, fmt: Format) {
    if fmt == Format::Json {
        let v: Vec<Value> =
            r.pools.iter().map(|p| json!({"trunk": p.trunk, "node": p.node, "in_use": p.in_use, "limit": p.limit})).collect();
        println!("{}", Value::Array(v));
        return;
    }
    table(
        &["TRUNK", "NODE", "IN_USE", "LIMIT"],
        r.pools.iter().map(|p| vec![p.trunk.clone(), p.node.clone(), p.in_use.to_string(), p.limit.to_string()]).collect(),
    );
}

fn member_json(m: &pb::Member) -> Value {
    json!({"id": m.id, "name": m.name, "region": m.region, "zone": m.zone, "role": m.role, "voter": m.voter,
           "leader": m.leader, "healthy": m.healthy, "sip": m.sip, "cluster": m.cluster, "lag": m.lag})
}

pub fn members(r: &pb::ClusterStatusReply, fmt: Format) {
    if fmt == Format::Json {
        println!("{}", Value::Array(r.members.iter().map(member_json).collect()));
        return;
    }
    let rows = r
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.name.clone(),
                m.region.clone(),
                m.zone.clone(),
                m.role.clone(),
                m.voter.to_string(),
                m.leader.to_string(),
                m.healthy.to_string(),
                if m.lag < 0 { "-".to_string() } else { m.lag.to_string() },
                m.cluster.clone(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "REGION", "ZONE", "ROLE", "VOTER", "LEADER", "HEALTHY", "LAG", "ADDRESS"], rows);
}

pub fn status(r: &pb::ClusterStatusReply, fmt: Format) {
    if fmt == Format::Json {
        let v = json!({"leader": r.leader, "term": r.term, "commit_index": r.commit_index, "applied_index": r.applied_index,
                       "initialized": r.initialized, "members": r.members.iter().map(member_json).collect::<Vec<_>>()});
        println!("{v}");
        return;
    }
    println!("leader {}  term {}  commit {}  applied {}", r.leader, r.term, r.commit_index, r.applied_index);
    members(r, fmt);
}

pub fn done(fmt: Format, msg: &str) {
    if fmt == Format::Json {
        println!("{}", json!({"ok": true, "message": msg}));
    } else {
        println!("{msg}");
    }
}

//! The status page (`status.html`, embedded: no CDN, no build step) and the JSON it polls, for
//! scripts too: `/api/v1/members`, `/api/v1/trunks`, `/api/v1/calls`, `/api/v1/cdrs` and
//! `/api/v1/rates` (documented in `docs/operations.md`). Read-only. With an admin token configured
//! every route here needs it, as `Authorization: Bearer <token>` or as the password of HTTP Basic
//! (what a browser asks for); without one they are open, as the admin API is.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use hatrunk_core::trunk::Role;
use serde_json::{json, Value};

use super::HttpState;

const PAGE: &str = include_str!("status.html");

type S = State<Arc<HttpState>>;

pub fn router(state: Arc<HttpState>) -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/v1/members", get(members))
        .route("/api/v1/trunks", get(trunks))
        .route("/api/v1/calls", get(calls))
        .route("/api/v1/cdrs", get(cdrs))
        .route("/api/v1/rates", get(rates))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// The admin token, when the node has one.
async fn guard(State(s): S, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        if let Some(b) = v.strip_prefix("Bearer ") {
            return Some(b.to_string());
        }
        let basic = base64::engine::general_purpose::STANDARD.decode(v.strip_prefix("Basic ")?).ok()?;
        String::from_utf8(basic).ok()?.split_once(':').map(|(_, p)| p.to_string())
    });
    if given.is_some_and(|g| hatrunk_sip::digest::constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"hatrunk\"")],
        "the admin token is needed (Bearer, or as the Basic password)\n",
    )
        .into_response()
}

/// Every member by region and zone, as this node's failure detector sees it, and the leader.
async fn members(State(s): S) -> Json<Value> {
    let view = s.health.view_now();
    let leader = s.health.leader();
    let lag = s.health.lag();
    let list: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.member.id,
                "name": m.member.name,
                "region": m.member.region,
                "zone": m.member.zone,
                "role": if m.member.sip { "sip" } else { "witness" },
                "voter": m.member.voter,
                "state": if m.alive { "up" } else { "down" },
                "quorum": m.quorum,
                "leader": leader == Some(m.member.id),
                // log entries behind the leader, when this node is the leader (null elsewhere)
                "lag": lag.get(&m.member.id),
                "this_node": m.member.id == view.self_id,
            })
        })
        .collect();
    Json(json!({ "node": s.node, "leader": leader, "quorum": view.quorum, "members": list }))
}

/// Every trunk: its limits and mode, what the ledger holds of it in all and per node, and its
/// accounts' state as this node sees them.
async fn trunks(State(s): S) -> Json<Value> {
    let usage: BTreeMap<String, u32> = s.admission.usage().into_iter().collect();
    let list: Vec<Value> = s
        .store
        .list()
        .iter()
        .map(|t| {
            let by_node: BTreeMap<String, u32> = s.admission.usage_by_node(&t.id).into_iter().collect();
            let account = |r: Role| {
                t.account(r).map(|a| {
                    let st = s.status.account(&t.id, r);
                    json!({ "label": a.label, "auth": a.auth, "health": st.health.state, "registered": st.registered })
                })
            };
            json!({
                "id": t.id,
                "revision": s.store.revision(&t.id),
                "mode": t.mode,
                "advanced_ha": t.advanced_ha,
                "max_concurrent_calls": t.max_concurrent_calls,
                "max_calls_per_second": t.max_calls_per_second,
                "in_use": usage.get(&t.id).copied().unwrap_or(0),
                "by_node": by_node,
                "primary": account(Role::Primary),
                "secondary": account(Role::Secondary),
            })
        })
        .collect();
    Json(json!({ "trunks": list }))
}

/// Calls in progress: on this node's engine, and per trunk against the limit.
async fn calls(State(s): S) -> Json<Value> {
    let limits: BTreeMap<String, u32> = s.store.list().iter().map(|t| (t.id.clone(), t.max_concurrent_calls)).collect();
    let trunks: Vec<Value> = s
        .admission
        .usage()
        .into_iter()
        .map(|(t, n)| json!({ "trunk": t, "in_use": n, "limit": limits.get(&t), "by_node": s.admission.usage_by_node(&t).into_iter().collect::<BTreeMap<_, _>>() }))
        .collect();
    Json(json!({ "node": s.node, "in_progress_here": s.status.calls_in_progress(), "trunks": trunks }))
}

/// This node's last CDRs and last failed-over calls, newest first.
async fn cdrs(State(s): S) -> Json<Value> {
    Json(json!({ "node": s.node, "cdrs": s.recent.cdrs(), "failovers": s.recent.failovers() }))
}

/// Calls and failovers per second on this node, one sample per 5 s over the last five minutes.
async fn rates(State(s): S) -> Json<Value> {
    Json(json!({ "node": s.node, "interval_ms": crate::recent::SAMPLE_MS, "rates": s.recent.rates() }))
}

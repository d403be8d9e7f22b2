//! `[http] listen`: `/metrics` (Prometheus text) and `/health`, open to scrapers; the status page
//! at `/` and its data as JSON under `/api/v1/` (`api.rs`), behind the admin token when the node
//! has one.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::admission::Admission;
use crate::metrics::Metrics;
use crate::status::SharedStatus;
use crate::store::TrunkStore;

mod api;

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn TrunkStore>,
    pub admission: Arc<dyn Admission>,
    pub status: Arc<SharedStatus>,
    pub health: Arc<crate::cluster_health::ClusterHealth>,
    pub recent: Arc<crate::recent::Recent>,
    /// The admin token: with it, the page and the API need it (Bearer, or Basic's password).
    pub token: Option<Arc<str>>,
    /// This node's name.
    pub node: String,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .merge(api::router(state.clone()))
        .with_state(state)
}

async fn metrics(axum::extract::State(s): axum::extract::State<Arc<HttpState>>) -> String {
    let m = &s.metrics;
    m.pool_in_use.reset();
    for (trunk, n) in s.admission.usage() {
        m.pool_in_use.with_label_values(&[&trunk]).set(i64::from(n));
    }
    for t in s.store.list() {
        m.pool_limit.with_label_values(&[&t.id]).set(i64::from(t.max_concurrent_calls));
        for role in [hatrunk_core::trunk::Role::Primary, hatrunk_core::trunk::Role::Secondary] {
            if t.account(role).is_none() {
                continue;
            }
            let st = s.status.account(&t.id, role);
            let v = match st.health.state {
                hatrunk_core::health::HealthState::Up => 1,
                hatrunk_core::health::HealthState::Down => 0,
                hatrunk_core::health::HealthState::Unknown => {
                    if st.registered.is_some() {
                        1
                    } else {
                        -1
                    }
                }
            };
            let name = if role == hatrunk_core::trunk::Role::Primary { "primary" } else { "secondary" };
            m.account_up.with_label_values(&[&t.id, name]).set(v);
        }
    }
    m.calls_in_progress.set(s.status.calls_in_progress() as i64);
    m.leader_known.set(i64::from(s.health.leader().is_some()));
    m.member_up.reset();
    for mv in s.health.view_now().members {
        let role = if mv.member.sip { "sip" } else { "witness" };
        m.member_up.with_label_values(&[&mv.member.name, &mv.member.zone, &mv.member.region, role]).set(i64::from(mv.alive));
    }
    if let Some(now) = s.admission.lease_state() {
        for state in crate::admission::lease::STATES {
            m.lease.with_label_values(&[state]).set(i64::from(state == now));
        }
    }
    m.ledger_write.set(s.admission.ledger_write_us().map_or(0.0, |us| us as f64 / 1e6));
    m.render()
}

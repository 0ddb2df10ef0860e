//! Operational views beside the diagnosis: backend readiness (`/ready`, `txdoctor health`)
//! and Prometheus metrics (`/metrics`).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use crate::api::AppState;
use crate::chain::failover::tip_warnings;
use crate::chain::{BackendHealth, BackendState, ChainSource};
use crate::telemetry;

/// Each backend's state, and warnings about them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    /// Whether at least one backend is up.
    pub ready: bool,
    /// Each backend, in the order they are tried.
    pub backends: Vec<BackendHealth>,
    /// Backends that disagree on the best block, for example.
    pub warnings: Vec<String>,
}

/// Probes every backend behind `source`.
pub async fn readiness(source: &dyn ChainSource) -> Readiness {
    let backends = source.health().await;
    let ready = backends
        .iter()
        .any(|backend| backend.state == BackendState::Up);
    let warnings = tip_warnings(&backends);
    Readiness {
        ready,
        backends,
        warnings,
    }
}

/// Renders a readiness report as lines of text.
pub fn readiness_report(readiness: &Readiness) -> String {
    let mut out = String::new();
    for backend in &readiness.backends {
        let state = match backend.state {
            BackendState::Up => "up",
            BackendState::Down => "down",
        };
        let tip = backend
            .tip_height
            .map_or("-".to_owned(), |height| height.to_string());
        let latency = backend
            .latency_ms
            .map_or("-".to_owned(), |latency| format!("{latency} ms"));
        out.push_str(&format!(
            "{state:<5} {}  tip {tip}  latency {latency}\n",
            backend.backend
        ));
        if let Some(error) = &backend.last_error {
            out.push_str(&format!("      last error: {error}\n"));
        }
    }
    for warning in &readiness.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

/// `GET /ready`: 200 when a backend is up, 503 when none is.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = readiness(state.doctor.source().as_ref()).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::render(),
    )
}

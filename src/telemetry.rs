//! Prometheus metrics: one process-wide recorder, rendered by the `/metrics` route.
//!
//! The `metrics` facade drops every measurement until a recorder is installed, so the
//! library records freely and the server installs the recorder once, at start-up.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::chain::ChainError;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on the first call and returns its handle; later
/// calls return the same handle. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "failed to install the metrics recorder; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Records one request to a backend: its count, its latency and, if it failed, its error.
pub(crate) fn backend_request(
    backend: &str,
    method: &'static str,
    elapsed: Duration,
    error: Option<&ChainError>,
) {
    let labels = [
        ("backend", backend.to_owned()),
        ("method", method.to_owned()),
    ];
    metrics::counter!("txdoctor_backend_requests_total", &labels).increment(1);
    metrics::histogram!("txdoctor_backend_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    if let Some(error) = error {
        let kind = match error {
            ChainError::Unavailable { .. } => "unavailable",
            ChainError::Inconsistent { .. } => "inconsistent",
        };
        let labels = [
            ("backend", backend.to_owned()),
            ("method", method.to_owned()),
            ("kind", kind.to_owned()),
        ];
        metrics::counter!("txdoctor_backend_errors_total", &labels).increment(1);
    }
}

/// Records one cache lookup of a kind of fact.
pub(crate) fn cache_lookup(kind: &'static str, hit: bool) {
    if hit {
        metrics::counter!("txdoctor_cache_hits_total", "kind" => kind).increment(1);
    } else {
        metrics::counter!("txdoctor_cache_misses_total", "kind" => kind).increment(1);
    }
}

/// Middleware that counts each API request and its latency by route and status.
pub async fn track_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    // Only standard methods become labels, so that a client cannot add series at will.
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => {
            known.to_owned()
        }
        _ => "other".to_owned(),
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("txdoctor_http_requests_total", &labels).increment(1);
    metrics::histogram!("txdoctor_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

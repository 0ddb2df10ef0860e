//! The JSON API: thin axum handlers over [`Doctor`], with every error mapped in one place.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::analysis::Diagnosis;
use crate::chain::ChainError;
use crate::diagnose::{DiagnoseError, Doctor};
use crate::input::{self, InputError};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The use case behind every route.
    pub doctor: Arc<Doctor>,
}

/// Builds the router: `/health`, `/ready`, `/metrics` and `/api/v1/tx/{txid}`, and
/// installs the metrics recorder if it is not installed yet.
pub fn router(state: AppState) -> Router {
    crate::telemetry::install();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(crate::ops::ready))
        .route("/metrics", get(crate::ops::metrics))
        .route("/api/v1/tx/{txid}", get(diagnose_get).post(diagnose_post))
        .fallback(not_found_route)
        .layer(axum::middleware::from_fn(crate::telemetry::track_route))
        .with_state(state)
}

/// An API error: a stable code, an HTTP status and a message, plus the partial diagnosis
/// of a transaction that was not found.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnosis: Option<Box<Diagnosis>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnosis: Option<&'a Diagnosis>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            diagnosis: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            diagnosis: self.diagnosis.as_deref(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        let code = match error {
            InputError::InvalidTxid { .. } => "invalid_txid",
            InputError::InvalidTxHex { .. } => "invalid_tx_hex",
            InputError::PrivateKey => "private_key_rejected",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, error.to_string())
    }
}

impl From<DiagnoseError> for ApiError {
    fn from(error: DiagnoseError) -> Self {
        match &error {
            DiagnoseError::RawTxMismatch { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "tx_hex_mismatch",
                error.to_string(),
            ),
            DiagnoseError::Chain(ChainError::Unavailable { backend, reason }) => {
                tracing::warn!(%backend, %reason, "backend unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    error.to_string(),
                )
            }
            DiagnoseError::Chain(ChainError::Inconsistent { backend, detail }) => {
                tracing::warn!(%backend, %detail, "backend returned inconsistent data");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "backend_inconsistent",
                    error.to_string(),
                )
            }
        }
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn not_found_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /api/v1/tx/{txid}",
    )
}

/// Optional evidence for a transaction the backend no longer knows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnoseParams {
    /// The raw transaction in hex.
    pub tx_hex: Option<String>,
}

async fn diagnose_get(
    State(state): State<AppState>,
    Path(txid): Path<String>,
    Query(params): Query<DiagnoseParams>,
) -> Result<Json<Diagnosis>, ApiError> {
    diagnose(&state, &txid, params).await
}

async fn diagnose_post(
    State(state): State<AppState>,
    Path(txid): Path<String>,
    body: Result<Json<DiagnoseParams>, JsonRejection>,
) -> Result<Json<Diagnosis>, ApiError> {
    let Json(params) = body.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            rejection.body_text(),
        )
    })?;
    diagnose(&state, &txid, params).await
}

async fn diagnose(
    state: &AppState,
    txid: &str,
    params: DiagnoseParams,
) -> Result<Json<Diagnosis>, ApiError> {
    let txid = input::parse_txid(txid)?;
    let raw = params
        .tx_hex
        .as_deref()
        .map(input::parse_tx_hex)
        .transpose()?;
    let started = Instant::now();
    let diagnosis = state.doctor.diagnose(txid, raw).await?;
    tracing::debug!(%txid, cause = ?diagnosis.cause(), elapsed_ms = started.elapsed().as_millis() as u64, "diagnosed");
    if !diagnosis.status.is_found() {
        let message = format!(
            "transaction {txid} not found: {}",
            diagnosis.verdict.headline
        );
        return Err(ApiError {
            diagnosis: Some(Box::new(diagnosis)),
            ..ApiError::new(StatusCode::NOT_FOUND, "tx_not_found", message)
        });
    }
    Ok(Json(diagnosis))
}

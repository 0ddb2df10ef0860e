//! The JSON API: thin axum handlers over [`Doctor`], with every error mapped in one place.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::analysis::Diagnosis;
use crate::bump::check::{self, CheckError, PsbtReport};
use crate::bump::owner::DescriptorError;
use crate::bump::plan::Strategy;
use crate::bump::{BumpConfig, BumpError, BumpPlan, BumpRequest, Bumper, Target};
use crate::chain::ChainError;
use crate::diagnose::{DiagnoseError, Doctor};
use crate::input::{self, InputError};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The diagnosis use case.
    pub doctor: Arc<Doctor>,
    /// The bump use case.
    pub bumper: Arc<Bumper>,
}

impl AppState {
    /// State over one doctor, with a bumper configured by `bump`.
    pub fn new(doctor: Arc<Doctor>, bump: BumpConfig) -> Self {
        let bumper = Arc::new(Bumper::new(doctor.clone(), bump));
        Self { doctor, bumper }
    }
}

/// Builds the router: `/health`, `/ready`, `/metrics`, and diagnosis, bump plans and PSBT
/// checks under `/api/v1`; installs the metrics recorder if it is not installed yet.
pub fn router(state: AppState) -> Router {
    crate::telemetry::install();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(crate::ops::ready))
        .route("/metrics", get(crate::ops::metrics))
        .route("/api/v1/tx/{txid}", get(diagnose_get).post(diagnose_post))
        .route("/api/v1/tx/{txid}/bump", post(bump))
        .route("/api/v1/psbt/check", post(psbt_check))
        .fallback(not_found_route)
        .method_not_allowed_fallback(method_not_allowed)
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

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; diagnoses are GET or POST, bumps and PSBT checks POST",
    )
}

/// Maps a JSON body rejection, keeping its status (400, 413, 415 or 422). Only the names
/// of unknown or missing fields are repeated, because the rest could quote descriptors.
fn body_error(rejection: &JsonRejection, expected: &str) -> ApiError {
    let text = rejection.body_text();
    let field = ["unknown field", "missing field"].iter().find_map(|kind| {
        text.find(kind).map(|at| {
            text[at..]
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    });
    let detail = field.map_or_else(String::new, |field| format!(": {field}"));
    ApiError::new(
        rejection.status(),
        "invalid_body",
        format!("invalid request body, expected {expected}{detail}"),
    )
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
    query: Result<Query<DiagnoseParams>, QueryRejection>,
) -> Result<Json<Diagnosis>, ApiError> {
    let Query(params) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query: {}", rejection.body_text()),
        )
    })?;
    diagnose(&state, &txid, params).await
}

async fn diagnose_post(
    State(state): State<AppState>,
    Path(txid): Path<String>,
    body: Result<Json<DiagnoseParams>, JsonRejection>,
) -> Result<Json<Diagnosis>, ApiError> {
    let Json(params) =
        body.map_err(|rejection| body_error(&rejection, "JSON {\"tx_hex\": hex}"))?;
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
    tracing::debug!(%txid, cause = ?diagnosis.cause(), elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "diagnosed");
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

impl From<ChainError> for ApiError {
    fn from(error: ChainError) -> Self {
        ApiError::from(DiagnoseError::Chain(error))
    }
}

impl From<BumpError> for ApiError {
    fn from(error: BumpError) -> Self {
        let (status, code) = match &error {
            BumpError::Descriptor(DescriptorError::PrivateKey { .. }) => {
                (StatusCode::BAD_REQUEST, "private_key_rejected")
            }
            BumpError::Descriptor(DescriptorError::WrongNetwork { .. }) => {
                (StatusCode::BAD_REQUEST, "wrong_network")
            }
            BumpError::Descriptor(_) => (StatusCode::BAD_REQUEST, "invalid_descriptor"),
            BumpError::NotFound(_) => (StatusCode::NOT_FOUND, "tx_not_found"),
            BumpError::Confirmed { .. } => (StatusCode::CONFLICT, "tx_confirmed"),
            BumpError::TargetNotAbove { .. } | BumpError::InvalidTarget(_) => {
                (StatusCode::BAD_REQUEST, "invalid_target")
            }
            BumpError::NothingOwned(_) => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_owned"),
            BumpError::Chain(chain) => return ApiError::from(chain.clone()),
        };
        ApiError::new(status, code, error.to_string())
    }
}

/// The body of a bump request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BumpBody {
    /// Public descriptors of the owner's wallet.
    pub descriptors: Vec<String>,
    /// Change descriptors, paired by position.
    #[serde(default)]
    pub change_descriptors: Vec<String>,
    /// Target fee rate in sat/vB, as a number or a string.
    #[serde(default)]
    pub feerate: Option<rust_decimal::Decimal>,
    /// Target confirmation within this many blocks; 1 when neither target is given.
    #[serde(default)]
    pub blocks: Option<u16>,
    /// Kinds of bump to build.
    #[serde(default)]
    pub strategy: Strategy,
    /// Whether a payment to someone else may be reduced.
    #[serde(default)]
    pub allow_payment_decrease: bool,
    /// Pay above the fee ceiling anyway.
    #[serde(default)]
    pub force: bool,
}

async fn bump(
    State(state): State<AppState>,
    Path(txid): Path<String>,
    body: Result<Json<BumpBody>, JsonRejection>,
) -> Result<Json<BumpPlan>, ApiError> {
    let txid = input::parse_txid(&txid)?;
    let expected = "JSON with \"descriptors\" and \"feerate\" or \"blocks\"";
    let Json(body) = body.map_err(|rejection| body_error(&rejection, expected))?;
    let target = match (body.feerate, body.blocks) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "give feerate or blocks, not both",
            ));
        }
        (Some(rate), None) => Target::FeeRate(rate),
        (None, blocks) => Target::Blocks(blocks.unwrap_or(1)),
    };
    let request = BumpRequest {
        txid,
        descriptors: body.descriptors,
        change_descriptors: body.change_descriptors,
        target,
        strategy: body.strategy,
        allow_payment_decrease: body.allow_payment_decrease,
        force: body.force,
    };
    Ok(Json(state.bumper.plan(&request).await?))
}

/// The body of a PSBT check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsbtBody {
    /// The PSBT in base64.
    pub psbt: String,
}

async fn psbt_check(
    State(state): State<AppState>,
    body: Result<Json<PsbtBody>, JsonRejection>,
) -> Result<Json<PsbtReport>, ApiError> {
    let Json(body) = body.map_err(|rejection| body_error(&rejection, "JSON {\"psbt\": base64}"))?;
    let psbt = check::parse_psbt(&body.psbt).map_err(|error| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_psbt", error.to_string())
    })?;
    let report = check::check(&state.doctor, &psbt, state.bumper.config().max_fee_sat)
        .await
        .map_err(|error| match error {
            CheckError::InvalidPsbt(reason) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_psbt", reason)
            }
            CheckError::Chain(chain) => ApiError::from(chain),
        })?;
    Ok(Json(report))
}

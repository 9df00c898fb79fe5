//! The `/v1` handlers, the router that ties them to the run manager, the bearer-token check and
//! the OpenAPI document generated from the handlers' types.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tessera_workflow::{ValidationContext, validate_source};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::request::{CreateRunRequest, RawRequest, prepare};
use crate::runs::{RunHandle, RunManager, state_name};
use crate::store::{RunRecord, RunState, StoredEvent};
use crate::workflows::{WorkflowDetail, WorkflowInfo, WorkflowLibrary};
use crate::{ModelInfo, PluginInfo};

/// What the handlers share.
pub struct AppState {
    pub runs: Arc<RunManager>,
    pub library: WorkflowLibrary,
    pub model: ModelInfo,
    pub plugins: Vec<PluginInfo>,
    /// Required as `Authorization: Bearer TOKEN` on `/v1` (except health) when set.
    pub token: Option<String>,
    pub body_limit: usize,
    /// The longest `?wait=` honoured (below the request timeout).
    pub max_wait: Duration,
    pub started: Instant,
}

type Shared = State<Arc<AppState>>;

/// Every route of the server, web page included.
pub fn router(state: Arc<AppState>, request_timeout: Duration) -> Router {
    let protected = Router::new()
        .route("/runs", post(create_run).get(list_runs))
        .route("/runs/{id}", get(get_run).delete(delete_run))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/outputs/{name}", get(get_output))
        .route("/runs/{id}/outputs/{name}/{file}", get(get_output_file))
        .route("/workflows", get(list_workflows))
        .route("/workflows/validate", post(validate_workflow))
        .route("/workflows/{name}", get(get_workflow))
        .route("/plugins", get(list_plugins))
        .route("/models", get(list_models))
        .route("/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let v1 = Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/v1", v1)
        .merge(crate::web::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request("bad_query", rejection.body_text())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_token(State(state): Shared, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same_secret(given.trim().as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if given.is_some() {
                    "the bearer token is not the server's API token"
                } else {
                    "this server requires `Authorization: Bearer <token>` (the token it was started with in TESSERA_API_TOKEN)"
                },
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Liveness and load.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_s: f64,
    /// Runs queued or running.
    pub active_runs: usize,
}

#[utoipa::path(get, path = "/v1/health", tag = "server",
    responses((status = 200, description = "The server is up", body = Health)))]
async fn health(State(state): Shared) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs_f64(),
        active_runs: state.runs.active(),
    })
}

#[derive(Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Block up to this many seconds until the run has ended (capped below the request timeout).
    pub wait: Option<f64>,
}

#[utoipa::path(post, path = "/v1/runs", tag = "runs", params(WaitQuery),
    request_body(content(
        (CreateRunRequest = "application/json"),
        (CreateRunRequest = "multipart/form-data")),
        description = "JSON, or a multipart form with fields `workflow`, `workflow_toml`, `run_id`, `seed`, `no_cache`, `outputs` and one `inputs.NAME` part per input (image files as file parts)"),
    responses(
        (status = 201, description = "Run created (queued, or ended when `wait` was given)", body = RunRecord),
        (status = 200, description = "Same client run id and request: the existing run", body = RunRecord),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 404, description = "Unknown workflow", body = ErrorBody),
        (status = 409, description = "Run id used by another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 422, description = "Invalid workflow, missing or wrong inputs", body = ErrorBody)))]
async fn create_run(
    State(state): Shared,
    query: Result<Query<WaitQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let raw = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("malformed_multipart", e.body_text()))?;
        RawRequest::from_multipart(multipart).await?
    } else if content_type.starts_with("application/json") {
        let body = read_body(request, &state).await?;
        RawRequest::from_json(&body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "runs are created with application/json or multipart/form-data, not {content_type}"
            ),
        ));
    };
    // Validation and the run store's synced writes block: keep them off the async workers.
    let blocking_state = state.clone();
    let (handle, created) = tokio::task::spawn_blocking(move || {
        let prepared = prepare(raw, blocking_state.runs.engine(), &blocking_state.library)?;
        blocking_state.runs.submit(prepared)
    })
    .await
    .map_err(|e| ApiError::internal(format!("preparing the run: {e}")))??;
    if let Some(wait) = query.wait.filter(|w| w.is_finite() && *w > 0.0) {
        let wait = Duration::from_secs_f64(wait).min(state.max_wait);
        handle.wait_until_done(wait).await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(handle.record())).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", handle.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn read_body(request: Request, state: &Arc<AppState>) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(state.body_limit)
        } else {
            ApiError::bad_request("unreadable_body", e.body_text())
        }
    })
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// At most this many (default 100, newest first).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Runs, newest first", body = [RunRecord]),
        (status = 400, description = "Unknown state", body = ErrorBody)))]
async fn list_runs(
    State(state): Shared,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(
        state
            .runs
            .list()
            .into_iter()
            .filter(|run| query.state.is_none_or(|wanted| run.state == wanted))
            .take(query.limit.unwrap_or(100))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunRecord), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    Ok(Json(state.runs.get(&id)?.record()))
}

#[utoipa::path(delete, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 204, description = "Deleted with its outputs"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run has not ended", body = ErrorBody)))]
async fn delete_run(State(state): Shared, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let runs = state.runs.clone();
    tokio::task::spawn_blocking(move || runs.delete(&id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, description = "Cancellation requested", body = RunRecord),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody)))]
async fn cancel_run(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let handle = state.runs.cancel(&id)?;
    Ok((StatusCode::ACCEPTED, Json(handle.record())))
}

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header takes precedence).
    pub after: Option<u64>,
}

struct EventCursor {
    handle: Arc<RunHandle>,
    after: u64,
    changes: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<StoredEvent>,
    ended: bool,
}

/// Whether this event is a run's last (its terminal state).
fn ends_run(event: &StoredEvent) -> bool {
    event.kind == "run"
        && serde_json::from_value::<RunState>(event.data["state"].clone())
            .is_ok_and(RunState::is_terminal)
}

fn event_stream(cursor: EventCursor) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                cursor.after = event.id;
                let sse = Event::default()
                    .id(event.id.to_string())
                    .event(event.kind.clone())
                    .data(event.data.to_string());
                return Some((Ok(sse), cursor));
            }
            if cursor.ended {
                return None;
            }
            let (batch, _) = cursor.handle.events_after(cursor.after);
            if batch.is_empty() {
                if cursor.changes.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            cursor.ended = batch.iter().any(ends_run);
            cursor.pending.extend(batch);
        }
    })
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "Run id"), EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-sent events: `run` (state changes), `queued`, `started`, `progress`, `cached`, `finished`, `failed`, `skipped`; each with an id; the stream ends after the run's terminal `run` event", content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody)))]
async fn run_events(
    State(state): Shared,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let handle = state.runs.get(&id)?;
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_last_event_id",
                    "Last-Event-ID must be an event id (an integer)",
                )
            })?,
        None => query.after.unwrap_or(0),
    };
    let cursor = EventCursor {
        changes: handle.subscribe(),
        handle,
        after,
        pending: VecDeque::new(),
        ended: false,
    };
    Ok(Sse::new(event_stream(cursor)).keep_alive(KeepAlive::default()))
}

fn find_output<'a>(
    record: &'a RunRecord,
    name: &str,
) -> Result<&'a crate::store::OutputRecord, ApiError> {
    record
        .outputs
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| {
            if record.state.is_terminal() {
                let known: Vec<&str> = record.outputs.iter().map(|o| o.name.as_str()).collect();
                ApiError::not_found(
                    "unknown_output",
                    format!(
                        "run `{}` has no output `{name}` (outputs: {})",
                        record.id,
                        known.join(", ")
                    ),
                )
            } else {
                ApiError::not_found(
                    "output_not_ready",
                    format!(
                        "run `{}` is {}; outputs appear when it ends",
                        record.id,
                        state_name(record.state)
                    ),
                )
            }
        })
}

async fn file_response(
    state: &AppState,
    record: &RunRecord,
    file: &crate::store::FileRecord,
) -> Result<Response, ApiError> {
    let path = state.runs.run_dir(&record.id).join(&file.path);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal(format!("reading output file {}: {e}", file.path)))?;
    Ok(([(header::CONTENT_TYPE, file.content_type.clone())], bytes).into_response())
}

#[utoipa::path(get, path = "/v1/runs/{id}/outputs/{name}", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ("name" = String, Path, description = "Output name")),
    responses((status = 200, description = "The output's primary file, with its content type"),
        (status = 404, body = ErrorBody)))]
async fn get_output(
    State(state): Shared,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let record = state.runs.get(&id)?.record();
    let output = find_output(&record, &name)?;
    let file = output.files.first().ok_or_else(|| {
        ApiError::not_found(
            "no_output_files",
            format!("output `{name}` wrote no files (see the run's step errors)"),
        )
    })?;
    file_response(&state, &record, file).await
}

#[utoipa::path(get, path = "/v1/runs/{id}/outputs/{name}/{file}", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ("name" = String, Path, description = "Output name"),
        ("file" = String, Path, description = "File name within the output (see the run's `outputs[].files[].name`)")),
    responses((status = 200, description = "The file, with its content type"), (status = 404, body = ErrorBody)))]
async fn get_output_file(
    State(state): Shared,
    Path((id, name, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let record = state.runs.get(&id)?.record();
    let output = find_output(&record, &name)?;
    let found = output
        .files
        .iter()
        .find(|f| f.name == file)
        .ok_or_else(|| {
            let known: Vec<&str> = output.files.iter().map(|f| f.name.as_str()).collect();
            ApiError::not_found(
                "unknown_output_file",
                format!(
                    "output `{name}` has no file `{file}` (files: {})",
                    known.join(", ")
                ),
            )
        })?;
    file_response(&state, &record, found).await
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, description = "The built-in workflows", body = [WorkflowInfo])))]
async fn list_workflows(State(state): Shared) -> Json<Vec<WorkflowInfo>> {
    let engine = state.runs.engine();
    Json(
        state
            .library
            .names()
            .iter()
            .filter_map(|name| state.library.describe(engine, name).ok())
            .map(|detail| detail.info)
            .collect(),
    )
}

#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, body = WorkflowDetail), (status = 404, body = ErrorBody)))]
async fn get_workflow(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<WorkflowDetail>, ApiError> {
    Ok(Json(state.library.describe(state.runs.engine(), &name)?))
}

/// The result of validating a workflow: `{file, valid, diagnostics}`; each diagnostic has a stable
/// `code` and `name`, `severity`, `message`, `step`, `line` and `column` (1-based).
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ValidationResult(serde_json::Value);

#[utoipa::path(post, path = "/v1/workflows/validate", tag = "workflows",
    request_body(content(
        (String = "application/toml"),
        (Object = "application/json")),
        description = "The workflow's TOML text, or JSON: `{\"toml\": TEXT}` or the workflow document itself"),
    responses((status = 200, description = "The diagnostics (`valid` false when there are errors)", body = ValidationResult),
        (status = 400, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn validate_workflow(
    State(state): Shared,
    request: Request,
) -> Result<Json<ValidationResult>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = read_body(request, &state).await?;
    let (file, text) = if content_type.starts_with("application/toml")
        || content_type.starts_with("text/plain")
    {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("unreadable_body", "the TOML is not UTF-8"))?;
        ("workflow.toml", text)
    } else if content_type.starts_with("application/json") {
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::malformed_json(&e))?;
        match json.get("toml") {
            Some(serde_json::Value::String(text))
                if json.as_object().is_some_and(|o| o.len() == 1) =>
            {
                ("workflow.toml", text.clone())
            }
            _ => {
                let text = toml_edit::ser::to_string_pretty(&json).map_err(|e| {
                    ApiError::bad_request(
                        "malformed_workflow_json",
                        format!("the JSON cannot be a workflow document: {e}"),
                    )
                })?;
                // Positions then refer to this TOML form, which is returned with the result.
                ("workflow.json.toml", text)
            }
        }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the workflow as application/toml or application/json, not {content_type:?}"
            ),
        ));
    };
    let engine = state.runs.engine();
    let served = engine.served_domains();
    let report = validate_source(
        file,
        &text,
        &ValidationContext {
            catalog: Some(engine.catalog()),
            served_domains: Some(&served),
        },
    );
    let mut json = report.to_json();
    if file == "workflow.json.toml" {
        json["source"] = text.into();
    }
    Ok(Json(ValidationResult(json)))
}

#[utoipa::path(get, path = "/v1/plugins", tag = "server",
    responses((status = 200, description = "Loaded plugins", body = [PluginInfo])))]
async fn list_plugins(State(state): Shared) -> Json<Vec<PluginInfo>> {
    Json(state.plugins.clone())
}

#[utoipa::path(get, path = "/v1/models", tag = "server",
    responses((status = 200, description = "The loaded model", body = [ModelInfo])))]
async fn list_models(State(state): Shared) -> Json<Vec<ModelInfo>> {
    Json(vec![state.model.clone()])
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "server",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "tessera", description = "Local HTTP API of the tessera any-to-any generation host: runs of workflows, live events, outputs, discovery."),
    paths(health, create_run, list_runs, get_run, delete_run, cancel_run, run_events, get_output,
        get_output_file, list_workflows, get_workflow, validate_workflow, list_plugins, list_models, openapi),
    components(schemas(ErrorBody, RunRecord, CreateRunRequest, WorkflowInfo, WorkflowDetail, PluginInfo, ModelInfo, Health)),
    modifiers(&BearerAuth),
    tags((name = "runs"), (name = "workflows"), (name = "server"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

//! Run requests: the JSON and multipart forms of `POST /v1/runs`, turned into a validated
//! [`PreparedRun`] — workflow resolved and checked against the loaded model and plugins, every
//! input present and of a kind its domain takes — before anything is queued.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::Multipart;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_engine::{Engine, InputValue, StepValue};
use tessera_workflow::{Severity, ValidationContext, plan, validate_source};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::runs::PreparedRun;
use crate::workflows::{InputKind, WorkflowLibrary, input_kind};

/// `POST /v1/runs` as JSON. Give exactly one of `workflow` and `workflow_toml`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// A built-in workflow by name (see `GET /v1/workflows`).
    pub workflow: Option<String>,
    /// An inline workflow: the TOML text of a workflow file.
    pub workflow_toml: Option<String>,
    /// Input values by input name: a string (text), or an object with exactly one of
    /// `text` (string), `tokens` (list of token ids), `json` (any JSON, e.g. boxes or a token
    /// list), `image_base64` (PNG/JPEG bytes in base64, with optional `content_type`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Only these outputs (and the steps they need); default all.
    pub outputs: Option<Vec<String>>,
    /// A client-chosen run id (1-64 of `A-Z a-z 0-9 . _ -`): retrying the same request with it
    /// returns the existing run instead of starting another.
    pub run_id: Option<String>,
    /// Seed of the steps that do not set their own (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Neither serve steps from the step cache nor store them in it.
    #[serde(default)]
    pub no_cache: bool,
}

/// A request, whatever its transport.
#[derive(Debug, Default)]
pub struct RawRequest {
    pub workflow: Option<String>,
    pub workflow_toml: Option<String>,
    pub inputs: Vec<(String, InputValue)>,
    pub outputs: Option<Vec<String>>,
    pub run_id: Option<String>,
    pub seed: u64,
    pub no_cache: bool,
}

fn wrong_type(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable("wrong_input_type", format!("input `{name}`: {message}"))
        .with_details(serde_json::json!({ "input": name }))
}

/// One JSON input value.
fn json_input(name: &str, value: serde_json::Value) -> Result<InputValue, ApiError> {
    use serde_json::Value;
    const EXPECTED: &str = "expected a string, or an object with exactly one of `text`, `tokens`, \
                            `json`, `image_base64`";
    let object = match value {
        Value::String(text) => return Ok(InputValue::Text(text)),
        Value::Object(object) => object,
        other => {
            let got = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "a list",
                _ => "something else",
            };
            return Err(wrong_type(name, format!("{EXPECTED}; got {got}")));
        }
    };
    let kinds: Vec<&str> = ["text", "tokens", "json", "image_base64"]
        .into_iter()
        .filter(|k| object.contains_key(*k))
        .collect();
    if let Some(unknown) = object
        .keys()
        .find(|k| !["text", "tokens", "json", "image_base64", "content_type"].contains(&k.as_str()))
    {
        return Err(wrong_type(
            name,
            format!("unknown key `{unknown}`; {EXPECTED}"),
        ));
    }
    if kinds.len() != 1 {
        return Err(wrong_type(name, EXPECTED));
    }
    let field = &object[kinds[0]];
    match kinds[0] {
        "text" => field
            .as_str()
            .map(|t| InputValue::Text(t.to_owned()))
            .ok_or_else(|| wrong_type(name, "`text` must be a string")),
        "tokens" => serde_json::from_value::<Vec<u32>>(field.clone())
            .map(InputValue::Tokens)
            .map_err(|_| wrong_type(name, "`tokens` must be a list of non-negative integers")),
        "json" => Ok(InputValue::Json(field.to_string())),
        _ => {
            let encoded = field
                .as_str()
                .ok_or_else(|| wrong_type(name, "`image_base64` must be a string"))?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| wrong_type(name, format!("`image_base64` is not base64: {e}")))?;
            let mime = match object.get("content_type").and_then(|v| v.as_str()) {
                Some(mime) => mime.to_owned(),
                None => sniff_image(&data)
                    .ok_or_else(|| wrong_type(name, "the image is neither PNG nor JPEG"))?
                    .to_owned(),
            };
            Ok(InputValue::Image { mime, data })
        }
    }
}

fn sniff_image(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else {
        None
    }
}

impl RawRequest {
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let request: CreateRunRequest =
            serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
        let inputs = request
            .inputs
            .into_iter()
            .map(|(name, value)| Ok((name.clone(), json_input(&name, value)?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Self {
            workflow: request.workflow,
            workflow_toml: request.workflow_toml,
            inputs,
            outputs: request.outputs,
            run_id: request.run_id,
            seed: request.seed,
            no_cache: request.no_cache,
        })
    }

    /// Multipart form: fields `workflow`, `workflow_toml`, `run_id`, `seed`, `no_cache`,
    /// `outputs` (comma-separated) and one `inputs.NAME` part per input (a file part with an
    /// image content type is an image, `application/json` a JSON value, anything else text).
    pub async fn from_multipart(mut multipart: Multipart) -> Result<Self, ApiError> {
        let mut request = Self::default();
        let malformed = |e: axum::extract::multipart::MultipartError| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(e.status(), "body_too_large", e.body_text())
            } else {
                ApiError::bad_request("malformed_multipart", e.body_text())
            }
        };
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            let name = field.name().unwrap_or_default().to_owned();
            let content_type = field.content_type().map(str::to_owned);
            let data = field.bytes().await.map_err(malformed)?;
            let text = || {
                String::from_utf8(data.to_vec()).map_err(|_| {
                    ApiError::bad_request(
                        "malformed_multipart",
                        format!("field `{name}` is not UTF-8 text"),
                    )
                })
            };
            match name.as_str() {
                "workflow" => request.workflow = Some(text()?),
                "workflow_toml" => request.workflow_toml = Some(text()?),
                "run_id" => request.run_id = Some(text()?),
                "seed" => {
                    request.seed = text()?.trim().parse().map_err(|_| {
                        ApiError::bad_request(
                            "malformed_multipart",
                            "field `seed` is not a non-negative integer",
                        )
                    })?
                }
                "no_cache" => request.no_cache = matches!(text()?.trim(), "true" | "1" | "on"),
                "outputs" => {
                    request.outputs = Some(
                        text()?
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                _ => {
                    let Some(input) = name.strip_prefix("inputs.") else {
                        return Err(ApiError::bad_request(
                            "malformed_multipart",
                            format!(
                                "unknown form field `{name}` (expected workflow, workflow_toml, run_id, seed, \
                                 no_cache, outputs or inputs.NAME)"
                            ),
                        ));
                    };
                    let value = match content_type.as_deref() {
                        Some(mime) if mime.starts_with("image/") => InputValue::Image {
                            mime: mime.to_owned(),
                            data: data.to_vec(),
                        },
                        Some("application/json") => InputValue::Json(text()?),
                        _ => match sniff_image(&data) {
                            Some(mime) => InputValue::Image {
                                mime: mime.to_owned(),
                                data: data.to_vec(),
                            },
                            None => InputValue::Text(text()?),
                        },
                    };
                    request.inputs.push((input.to_owned(), value));
                }
            }
        }
        Ok(request)
    }
}

/// A client-chosen run id.
fn valid_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Resolves and validates everything a run needs.
pub fn prepare(
    request: RawRequest,
    engine: &Engine,
    library: &WorkflowLibrary,
) -> Result<PreparedRun, ApiError> {
    if let Some(id) = &request.run_id
        && !valid_run_id(id)
    {
        return Err(ApiError::bad_request(
            "invalid_run_id",
            format!(
                "run id {id:?} must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
            ),
        ));
    }
    let (file_name, source) = match (&request.workflow, &request.workflow_toml) {
        (Some(name), None) => (format!("{name}.toml"), library.source(name)?),
        (None, Some(text)) => ("inline.toml".to_owned(), text.clone()),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "ambiguous_workflow",
                "give either `workflow` (a name) or `workflow_toml` (inline), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::unprocessable(
                "missing_workflow",
                "give `workflow` (the name of a built-in workflow) or `workflow_toml` (inline TOML)",
            ));
        }
    };

    let mut given: BTreeMap<String, InputValue> = BTreeMap::new();
    for (name, value) in request.inputs {
        if given.insert(name.clone(), value).is_some() {
            return Err(ApiError::bad_request(
                "duplicate_input",
                format!("input `{name}` is given twice"),
            ));
        }
    }
    // A domain given as a token list needs no plugin, so it counts as served.
    let mut served = engine.served_domains();
    let structure = validate_source(
        &file_name,
        &source,
        &ValidationContext {
            catalog: None,
            served_domains: None,
        },
    );
    if let Some(workflow) = &structure.workflow {
        for (name, value) in &given {
            if let Some(input) = workflow.inputs.get(name)
                && matches!(value, InputValue::Tokens(_) | InputValue::Json(_))
            {
                served.insert(input.domain.clone());
            }
        }
    }
    let report = validate_source(
        &file_name,
        &source,
        &ValidationContext {
            catalog: Some(engine.catalog()),
            served_domains: Some(&served),
        },
    );
    let workflow = match (&report.workflow, report.has_errors()) {
        (Some(workflow), false) => workflow.clone(),
        _ => {
            let errors: Vec<String> = report
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message))
                .collect();
            return Err(ApiError::unprocessable(
                "invalid_workflow",
                format!(
                    "the workflow is not valid ({} error{}): {}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" },
                    errors.first().cloned().unwrap_or_default()
                ),
            )
            .with_details(report.to_json()));
        }
    };

    if let Some(unknown) = given
        .keys()
        .find(|name| !workflow.inputs.contains_key(*name))
    {
        let known: Vec<&str> = workflow.inputs.keys().map(String::as_str).collect();
        return Err(ApiError::unprocessable(
            "unknown_input",
            format!(
                "workflow `{}` has no input `{unknown}` (inputs: {})",
                workflow.name,
                known.join(", ")
            ),
        ));
    }
    let execution = plan(&workflow, request.outputs.as_deref())
        .map_err(|e| ApiError::unprocessable("unknown_output", e.to_string()))?;

    let mut inputs = BTreeMap::new();
    let mut missing = Vec::new();
    let mut digest = Sha256::new();
    digest.update(source.as_bytes());
    for name in &execution.inputs {
        let input = &workflow.inputs[name];
        let value = match (given.remove(name), &input.default) {
            (Some(value), _) => value,
            (None, Some(default)) => InputValue::Text(default.clone()),
            (None, None) => {
                missing.push(serde_json::json!({
                    "input": name,
                    "domain": input.domain,
                    "example": input.example,
                }));
                continue;
            }
        };
        check_kind(engine, name, &input.domain, &value)?;
        digest.update([0xff]);
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(value.identity());
        inputs.insert(name.clone(), StepValue::input(&input.domain, value));
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().filter_map(|m| m["input"].as_str()).collect();
        return Err(ApiError::unprocessable(
            "missing_input",
            format!("missing input(s): {}", names.join(", ")),
        )
        .with_details(serde_json::json!({ "missing": missing })));
    }
    digest.update(request.seed.to_le_bytes());
    digest.update([u8::from(request.no_cache)]);
    let outputs: BTreeSet<&String> = execution.outputs.keys().collect();
    for output in outputs {
        digest.update(output.as_bytes());
        digest.update([0]);
    }
    Ok(PreparedRun {
        workflow,
        source,
        plan: execution,
        inputs,
        seed: request.seed,
        no_cache: request.no_cache,
        run_id: request.run_id,
        request_digest: digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// Refuses a value its domain cannot take, before the run is queued.
fn check_kind(
    engine: &Engine,
    name: &str,
    domain: &str,
    value: &InputValue,
) -> Result<(), ApiError> {
    let given = match value {
        InputValue::Text(_) => "text",
        InputValue::Json(_) => "JSON",
        InputValue::Image { .. } => "an image",
        InputValue::Tokens(_) => "tokens",
    };
    let accepted = match (input_kind(engine, domain), value) {
        (InputKind::Text, InputValue::Image { .. }) => false,
        (InputKind::Text, _) => true,
        (InputKind::Image, _) => true,
        (InputKind::Tokens, InputValue::Tokens(_) | InputValue::Json(_)) => true,
        (InputKind::Tokens, _) => false,
        (InputKind::Unsupported, _) => false,
    };
    if accepted {
        return Ok(());
    }
    let wants = match input_kind(engine, domain) {
        InputKind::Text => "text (or JSON, or tokens)",
        InputKind::Image => "an image",
        InputKind::Tokens => "a token list (no plugin serves this domain to tokenize other values)",
        InputKind::Unsupported => "nothing: workflows do not take this domain as an input yet",
    };
    Err(wrong_type(
        name,
        format!("domain `{domain}` takes {wants}; got {given}"),
    )
    .with_details(serde_json::json!({ "input": name, "domain": domain })))
}

//! The values that flow between steps: user inputs (still untokenized, so a refused input fails
//! the steps that read it and nothing else) and produced results (tokens plus written artifacts).

use std::path::Path;
use std::sync::Arc;

use tessera_runtime::types::{Image, Value};

use crate::artifacts::WrittenArtifact;
use crate::error::EngineError;

/// A user input, as given on the command line or through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputValue {
    Text(String),
    /// A JSON document (for a domain without a plugin: a token list, `[1, 2]` or `{"ids": [..]}`).
    Json(String),
    Image {
        mime: String,
        data: Vec<u8>,
    },
    /// Token ids given directly.
    Tokens(Vec<u32>),
}

impl InputValue {
    /// Parses a command-line value: `@FILE` reads a file (`.png`/`.jpg` image, `.json` document,
    /// anything else text); otherwise the text itself.
    pub fn from_arg(arg: &str) -> Result<Self, EngineError> {
        let Some(path) = arg.strip_prefix('@') else {
            return Ok(Self::Text(arg.to_owned()));
        };
        let bytes = std::fs::read(path).map_err(|e| EngineError::io("reading", path, e))?;
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| EngineError::BadInput {
                domain: String::new(),
                reason: format!("{path} is not UTF-8 text"),
            })
        };
        Ok(match ext.as_str() {
            "png" => Self::Image {
                mime: "image/png".into(),
                data: bytes,
            },
            "jpg" | "jpeg" => Self::Image {
                mime: "image/jpeg".into(),
                data: bytes,
            },
            "json" => Self::Json(text(bytes)?),
            _ => Self::Text(text(bytes)?),
        })
    }

    /// The bytes that identify this value (for the cache key).
    pub fn identity(&self) -> Vec<u8> {
        let (tag, body): (u8, Vec<u8>) = match self {
            Self::Text(t) => (0, t.as_bytes().to_vec()),
            Self::Json(j) => (1, j.as_bytes().to_vec()),
            Self::Image { mime, data } => {
                let mut body = mime.as_bytes().to_vec();
                body.push(0);
                body.extend_from_slice(data);
                (2, body)
            }
            Self::Tokens(ids) => (3, ids.iter().flat_map(|id| id.to_le_bytes()).collect()),
        };
        let mut out = vec![tag];
        out.extend(body);
        out
    }

    /// The plugin contract's value (`None` for a token list).
    pub(crate) fn to_plugin_value(&self) -> Option<Value> {
        match self {
            Self::Text(t) => Some(Value::Text(t.clone())),
            Self::Json(j) => Some(Value::Json(j.clone())),
            Self::Image { mime, data } => Some(Value::Image(Image {
                mime: mime.clone(),
                data: data.clone(),
            })),
            Self::Tokens(_) => None,
        }
    }

    /// Token ids given as JSON (`[1, 2, 3]` or `{"ids": [...]}`) or directly.
    pub(crate) fn as_token_list(&self, domain: &str) -> Result<Vec<u32>, EngineError> {
        let bad = |reason: String| EngineError::BadInput {
            domain: domain.to_owned(),
            reason,
        };
        match self {
            Self::Tokens(ids) => Ok(ids.clone()),
            Self::Json(text) => {
                let json: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
                let list = match &json {
                    serde_json::Value::Array(_) => &json,
                    serde_json::Value::Object(map) => map
                        .get("ids")
                        .ok_or_else(|| bad("a JSON object needs an `ids` list".into()))?,
                    _ => return Err(bad("expected a JSON list of token ids".into())),
                };
                serde_json::from_value::<Vec<u32>>(list.clone())
                    .map_err(|e| bad(format!("token ids must be non-negative integers: {e}")))
            }
            Self::Text(_) | Self::Image { .. } => Err(bad(
                "no plugin serves this domain; give its tokens as a JSON list (e.g. @tokens.json)"
                    .into(),
            )),
        }
    }
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub step: String,
    pub domain: String,
    /// The valid tokens (sequences: without padding; image grids: row-major).
    pub ids: Vec<u32>,
    pub shape: Vec<u32>,
    pub artifacts: Vec<WrittenArtifact>,
    pub warnings: Vec<String>,
}

/// A value in a run: an input of the workflow, or a step's result.
#[derive(Debug, Clone)]
pub enum StepValue {
    Input {
        domain: String,
        value: Arc<InputValue>,
    },
    Produced(Arc<Produced>),
}

impl StepValue {
    pub fn input(domain: impl Into<String>, value: InputValue) -> Self {
        Self::Input {
            domain: domain.into(),
            value: Arc::new(value),
        }
    }

    pub fn domain(&self) -> &str {
        match self {
            Self::Input { domain, .. } => domain,
            Self::Produced(produced) => &produced.domain,
        }
    }

    /// The produced result, if this is one.
    pub fn produced(&self) -> Option<&Produced> {
        match self {
            Self::Produced(produced) => Some(produced),
            Self::Input { .. } => None,
        }
    }
}

//! A server on the fixture model with the real plugins, and request helpers for `oneshot`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tessera_server::{Server, ServerConfig};
use tower::ServiceExt;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A one-step workflow that is cheap on the fixture model. (The fixture models keep only the
/// first 6144 caption tokens of the vocabulary, so test captions use common words.)
pub const CHEAP: &str = r#"
workflow_version = 1
[workflow]
name = "cheap"
[inputs.caption]
domain = "caption"
[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 1
[outputs]
depth = "steps.depth"
"#;

/// The fixture model, vocabulary and built plugins, or `None` (skip) when missing outside CI.
pub fn fixtures() -> Option<(PathBuf, PathBuf)> {
    tessera_fixtures::fixture_model_with_plugins(&["caption"])
}

pub fn config(fixtures: &Path, plugins: &Path, data: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(fixtures.join(tessera_fixtures::FIXTURE_MODEL), plugins);
    config.workflows_dir = repo_root().join("workflows");
    config.data_dir = data.to_path_buf();
    config.asset_overrides.insert(
        "vocab".into(),
        fixtures.join(tessera_fixtures::FIXTURE_VOCAB),
    );
    config
}

/// A loaded test server and its data directory.
pub struct TestServer {
    pub server: Server,
    pub data: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> Option<Self> {
        Self::start_with(|_| {})
    }

    pub fn start_with(change: impl FnOnce(&mut ServerConfig)) -> Option<Self> {
        let (fixtures, plugins) = fixtures()?;
        let data = tempfile::tempdir().unwrap();
        let mut config = config(&fixtures, &plugins, data.path());
        change(&mut config);
        let server = Server::load(config).expect("the server loads the fixture model");
        Some(Self { server, data })
    }

    pub fn app(&self) -> Router {
        self.server.router()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.request("GET", uri).await
    }

    /// A request without a body.
    pub async fn request(&self, method: &str, uri: &str) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// A multipart form of parts.
    pub async fn post_multipart(&self, uri: &str, parts: &[FormPart<'_>]) -> Reply {
        let boundary = "tessera-test-boundary";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"")
                    .as_bytes(),
            );
            if let Some((file_name, content_type)) = file {
                body.extend_from_slice(
                    format!("; filename=\"{file_name}\"\r\ncontent-type: {content_type}")
                        .as_bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.send(
            Request::post(uri)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, uri: &str, json: serde_json::Value) -> Reply {
        self.send(
            Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(json.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Starts the cheap workflow and waits for it.
    pub async fn run_cheap(&self, caption: &str) -> serde_json::Value {
        let reply = self
            .post_json(
                "/v1/runs?wait=60",
                serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": caption } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()
    }
}

/// A multipart part: field name, optional (file name, content type), bytes.
pub type FormPart<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of the one JSON error shape.
    pub fn error_code(&self) -> String {
        let json = self.json();
        json["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {json}"))
            .to_owned()
    }
}

//! tessera-server: the local HTTP API of tessera (`tessera serve`). One loaded 4M core and its
//! plugins run workflows queued over HTTP; runs, their live events (SSE, resumable) and outputs
//! are kept in an on-disk run store that survives restarts; a small web page served by the same
//! binary starts workflows and shows their outputs. Bound to loopback by default; any other
//! address requires an API token.

pub mod api;
pub mod error;
pub mod request;
pub mod runs;
pub mod store;
mod web;
pub mod workflows;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_engine::{Engine, EngineConfig};
use utoipa::ToSchema;

pub use api::{ApiDoc, AppState};
pub use error::ApiError;
pub use runs::{RunManager, RunSettings};
pub use store::{RunRecord, RunState, RunStore};
pub use workflows::WorkflowLibrary;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The 4M checkpoint (directory with `config.json` + `model.safetensors`).
    pub model: PathBuf,
    pub plugins_dir: PathBuf,
    /// Built-in workflows offered by name.
    pub workflows_dir: PathBuf,
    /// Run store and step cache live here.
    pub data_dir: PathBuf,
    /// Plugin asset files replacing manifest paths (e.g. `vocab`).
    pub asset_overrides: BTreeMap<String, PathBuf>,
    /// 4M tokenizer checkpoints by domain, offered to plugins as host-nn graphs.
    pub tokenizers: BTreeMap<String, PathBuf>,
    pub bind: SocketAddr,
    /// Required on `/v1` (except health) when set; mandatory for a non-loopback bind.
    pub token: Option<String>,
    /// Runs executing at once; others wait in order.
    pub max_concurrent_runs: usize,
    /// Steps of one run executing at once.
    pub steps_per_run: usize,
    /// Largest request body (JSON, TOML or multipart with uploads), in bytes.
    pub body_limit: usize,
    /// Time to produce a response's head (`?wait=` is capped just below it).
    pub request_timeout: Duration,
    /// On shutdown, how long running runs may go on before they are cancelled.
    pub grace: Duration,
    /// At most this many ended runs are kept on disk (the most recently ended); `None` keeps all.
    pub keep_runs: Option<usize>,
}

impl ServerConfig {
    /// Defaults for a model: loopback port 7860, the data directory under the user's data home.
    pub fn new(model: impl Into<PathBuf>, plugins_dir: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            plugins_dir: plugins_dir.into(),
            workflows_dir: PathBuf::from("workflows"),
            data_dir: PathBuf::from("tessera-data"),
            asset_overrides: BTreeMap::new(),
            tokenizers: BTreeMap::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 7860)),
            token: None,
            max_concurrent_runs: 2,
            steps_per_run: 2,
            body_limit: 16 << 20,
            request_timeout: Duration::from_secs(120),
            grace: Duration::from_secs(10),
            keep_runs: None,
        }
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {bind} without an API token: a non-loopback address is reachable \
         from other machines; set TESSERA_API_TOKEN (clients then send `Authorization: Bearer \
         <token>`), or bind to 127.0.0.1"
    )]
    TokenRequired { bind: SocketAddr },
    #[error("the API token is empty")]
    EmptyToken,
    #[error("loading the engine")]
    Engine(#[source] Box<tessera_engine::EngineError>),
    #[error("reading model {path}")]
    Model {
        path: PathBuf,
        #[source]
        source: Box<tessera_model::ModelError>,
    },
    #[error("opening the run store")]
    Store(#[from] store::StoreError),
    #[error("listening on {bind}")]
    Bind {
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
}

/// A domain of the loaded model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelDomain {
    pub name: String,
    /// `pixels`, `image tokens`, `sequence` or `sequence embedding`.
    pub kind: String,
    /// Grid tokens of image-like domains, the token budget of sequences.
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Can be an input / be generated.
    pub input: bool,
    pub output: bool,
    /// The plugin tokenizing and detokenizing it, when one is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// The loaded model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    pub path: String,
    pub dtype: String,
    pub device: String,
    pub parameters: usize,
    /// Memory held by the weights.
    pub memory_bytes: u64,
    pub domains: Vec<ModelDomain>,
    /// Problems noticed at load, e.g. a plugin vocabulary that does not fit the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A plugin's resource limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginLimits {
    pub memory_mib: u64,
    pub call_timeout_ms: u64,
    pub max_input_bytes: u64,
    pub max_output_bytes: u64,
    pub max_instances: u32,
}

/// A loaded plugin.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginInfo {
    pub id: String,
    pub version: String,
    pub description: String,
    /// Domains of the model it serves.
    pub domains: Vec<String>,
    /// SHA-256 of its component.
    pub digest: String,
    pub limits: PluginLimits,
}

fn model_info(config: &ServerConfig, engine: &Engine) -> Result<ModelInfo, ServerError> {
    let summary = tessera_model::inspect(&config.model).map_err(|source| ServerError::Model {
        path: config.model.clone(),
        source: Box::new(source),
    })?;
    let model = engine.model();
    let parameters = model.parameter_count();
    Ok(ModelInfo {
        path: config.model.display().to_string(),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        device: format!("{:?}", model.device()).to_lowercase(),
        parameters,
        memory_bytes: (parameters * model.dtype().size_in_bytes()) as u64,
        domains: summary
            .domains
            .into_iter()
            .map(|d| ModelDomain {
                plugin: engine.plugin_for(&d.name).map(|p| p.id().to_owned()),
                name: d.name,
                kind: d.kind.to_owned(),
                tokens: d.tokens,
                vocab_size: d.vocab_size,
                input: d.encoder,
                output: d.decoder,
            })
            .collect(),
        warnings: engine.warnings().to_vec(),
    })
}

fn plugin_infos(engine: &Engine) -> Vec<PluginInfo> {
    let served = engine.served_domains();
    engine
        .plugins()
        .iter()
        .map(|plugin| {
            let manifest = plugin.manifest();
            let limits = &manifest.limits;
            PluginInfo {
                id: plugin.id().to_owned(),
                version: manifest.plugin.version.clone(),
                description: manifest.plugin.description.clone(),
                domains: manifest
                    .plugin
                    .domains
                    .iter()
                    .filter(|d| {
                        served.contains(*d)
                            && engine.plugin_for(d).is_some_and(|p| p.id() == plugin.id())
                    })
                    .cloned()
                    .collect(),
                digest: plugin.digest().to_hex(),
                limits: PluginLimits {
                    memory_mib: limits.memory_mib,
                    call_timeout_ms: limits.call_timeout_ms,
                    max_input_bytes: limits.max_input_bytes,
                    max_output_bytes: limits.max_output_bytes,
                    max_instances: limits.max_instances,
                },
            }
        })
        .collect()
}

/// A loaded server: engine, run store, router.
pub struct Server {
    state: Arc<AppState>,
    config: ServerConfig,
}

impl Server {
    /// Checks the bind/token rule, loads the model and plugins (blocking, seconds), and opens the
    /// run store (reporting runs a previous server left unfinished as failed).
    pub fn load(config: ServerConfig) -> Result<Self, ServerError> {
        if config.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServerError::EmptyToken);
        }
        if !config.bind.ip().is_loopback() && config.token.is_none() {
            return Err(ServerError::TokenRequired { bind: config.bind });
        }
        let engine = Engine::load(&EngineConfig {
            model: config.model.clone(),
            plugins_dir: config.plugins_dir.clone(),
            out_dir: config.data_dir.join("runs"),
            asset_overrides: config.asset_overrides.clone(),
            tokenizers: config.tokenizers.clone(),
        })
        .map_err(|e| ServerError::Engine(Box::new(e)))?;
        let model = model_info(&config, &engine)?;
        let plugins = plugin_infos(&engine);
        let store = RunStore::open(&config.data_dir)?;
        let runs = RunManager::open(
            Arc::new(engine),
            store,
            RunSettings {
                max_concurrent_runs: config.max_concurrent_runs,
                steps_per_run: config.steps_per_run,
                cache_dir: config.data_dir.join("cache").join("steps"),
                keep_runs: config.keep_runs,
            },
        )?;
        let state = Arc::new(AppState {
            runs,
            library: WorkflowLibrary::new(&config.workflows_dir),
            model,
            plugins,
            token: config.token.clone(),
            body_limit: config.body_limit,
            max_wait: config
                .request_timeout
                .saturating_sub(Duration::from_secs(1))
                .max(Duration::from_millis(100)),
            started: Instant::now(),
        });
        Ok(Self { state, config })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The HTTP application (for in-process tests with `tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone(), self.config.request_timeout)
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, ServerError> {
        tokio::net::TcpListener::bind(self.config.bind)
            .await
            .map_err(|source| ServerError::Bind {
                bind: self.config.bind,
                source,
            })
    }

    /// Serves until `shutdown` resolves; then takes no new runs, lets running ones finish for the
    /// grace period (cancelling them after it), and closes the connections.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let runs = self.state.runs.clone();
        let grace = self.config.grace;
        let app = self.router();
        let (stopped_sender, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            runs.shutdown(grace).await;
            let _ = stopped_sender.send(());
        });
        let server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = server => result.map_err(ServerError::Serve),
            // Connections still open some seconds after the runs stopped (idle keep-alive
            // clients, stalled readers) do not hold the process.
            () = async {
                let _ = stopped.await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            } => Ok(()),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

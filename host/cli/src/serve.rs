//! `tessera serve`: the local HTTP API and web page on one loaded model.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tessera_server::{Server, ServerConfig, shutdown_signal};

use crate::model_choice::ModelChoice;
use crate::workflows::default_workflows_dir;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// Address to listen on. Anything but loopback needs TESSERA_API_TOKEN set.
    #[arg(long, default_value = "127.0.0.1:7860")]
    bind: SocketAddr,
    /// Run store and step cache (default: $TESSERA_DATA_DIR, else the user's data directory).
    #[arg(long, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Runs executing at once; later ones wait in order.
    #[arg(long, default_value_t = 2)]
    max_runs: usize,
    /// Steps of one run executing at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Largest request body in MiB (uploads included).
    #[arg(long, default_value_t = 16)]
    body_limit_mib: usize,
    /// Seconds to answer a request (`?wait=` is capped just below).
    #[arg(long, default_value_t = 120)]
    request_timeout: u64,
    /// On Ctrl-C / SIGTERM, seconds running runs may go on before they are cancelled.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Keep at most N ended runs (the most recently ended) with their outputs; older ones are
    /// deleted when a run ends and at start. Default: keep every run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep_runs: Option<u64>,
    /// The text vocabulary (tokenizer JSON) for the text plugins; defaults to their manifests'.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("tessera");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/tessera");
    }
    std::env::temp_dir().join("tessera-data")
}

pub fn serve(args: ServeArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let model = args.model.resolve()?;
    let mut config = ServerConfig::new(&model.dir, plugins_dir);
    config.workflows_dir = default_workflows_dir();
    config.data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    config.bind = args.bind;
    config.token = std::env::var("TESSERA_API_TOKEN").ok();
    config.max_concurrent_runs = args.max_runs.max(1);
    config.steps_per_run = args.jobs.max(1);
    config.body_limit = args.body_limit_mib.max(1) << 20;
    config.request_timeout = Duration::from_secs(args.request_timeout.max(2));
    config.grace = Duration::from_secs(args.grace);
    config.keep_runs = args.keep_runs.map(|n| n as usize);
    if let Some(vocab) = &args.vocab {
        config
            .asset_overrides
            .insert("vocab".to_owned(), vocab.clone());
    }
    config.tokenizers = model.tokenizers.clone();
    let data_dir = config.data_dir.clone();
    let server = Server::load(config).context("starting the server")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = server.bind().await?;
        let address = listener.local_addr().context("reading the bound address")?;
        let state = server.state();
        println!(
            "tessera serving http://{address}/ (model {}, {} plugins, {} stored runs in {})",
            model.dir.display(),
            state.plugins.len(),
            state.runs.list().len(),
            data_dir.display()
        );
        for warning in &state.model.warnings {
            eprintln!("warning: {warning}");
        }
        server.serve(listener, shutdown_signal()).await?;
        // Stdout may be gone by now (a supervisor that read the address line and closed it).
        let _ = writeln!(std::io::stdout(), "tessera server stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

//! Per-instance store state: limits, captured diagnostics and the host side of the imports.

use crate::bindings::tessera::plugin::{host, types};
use crate::nn::GraphRegistry;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;

/// Longest log line kept from a plugin; the rest is cut so a plugin cannot flood the host.
const MAX_LOG_BYTES: usize = 4096;
/// Log lines accepted per call.
const MAX_LOGS_PER_CALL: u32 = 256;

pub struct State {
    pub plugin: Arc<str>,
    pub limiter: MemoryLimiter,
    pub table: ResourceTable,
    pub graphs: Arc<dyn GraphRegistry>,
    pub nn_allowed: Arc<[String]>,
    /// The last error-level message the plugin logged during the current call (the SDK's panic
    /// hook reports panics this way).
    pub last_error: Option<String>,
    logs_this_call: u32,
}

impl State {
    pub fn new(
        plugin: Arc<str>,
        memory_limit: u64,
        graphs: Arc<dyn GraphRegistry>,
        nn_allowed: Arc<[String]>,
    ) -> Self {
        Self {
            plugin,
            limiter: MemoryLimiter {
                limit: memory_limit,
                denied: None,
            },
            table: ResourceTable::new(),
            graphs,
            nn_allowed,
            last_error: None,
            logs_this_call: 0,
        }
    }

    /// Clears what the previous call left behind.
    pub fn begin_call(&mut self) {
        self.limiter.denied = None;
        self.last_error = None;
        self.logs_this_call = 0;
    }
}

/// Caps linear memory and remembers a refused request, so a trap that follows can be reported
/// as a memory-limit failure rather than a bare `unreachable`.
pub struct MemoryLimiter {
    pub limit: u64,
    pub denied: Option<u64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.denied = Some(desired as u64);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl types::Host for State {}

impl host::Host for State {
    fn log(&mut self, level: host::LogLevel, mut message: String) {
        self.logs_this_call += 1;
        if self.logs_this_call > MAX_LOGS_PER_CALL {
            return;
        }
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            host::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            host::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            host::LogLevel::Info => tracing::info!(plugin, "{message}"),
            host::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            host::LogLevel::Error => {
                tracing::error!(plugin, "{message}");
                self.last_error = Some(message);
            }
        }
    }

    fn progress(&mut self, fraction: f32, message: String) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        tracing::debug!(plugin = %self.plugin, fraction, "{message}");
    }
}

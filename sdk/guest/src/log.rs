//! Logging and progress through the host. On native builds (plugin unit tests) messages go to
//! stderr instead, since there is no host to call.

use crate::bindings::tessera::plugin::host;

pub use host::LogLevel;

/// Sends one log line to the host.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// Reports progress of the current call, `fraction` in [0, 1].
pub fn progress(fraction: f32, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host::progress(fraction, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[progress {:.0}%] {message}", fraction * 100.0);
}

/// Forwards panic messages to the host's error log: on `wasm32-unknown-unknown` stderr goes
/// nowhere, and the host reports the last error line as the panic's message.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            error(&format!("{message}{location}"));
        }));
    });
}

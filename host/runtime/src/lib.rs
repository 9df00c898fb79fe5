//! The tessera plugin runtime: loads modality plugins as sandboxed WebAssembly components on
//! wasmtime and calls them.
//!
//! A [`Runtime`] owns one wasmtime engine, the linker with the host side of the
//! `tessera:plugin` world, an on-disk compile cache and the epoch ticker that enforces per-call
//! time limits. [`Runtime::load`] turns an installed `plugin.toml` into a [`Plugin`]: the
//! component's digest is checked, the component is compiled (or taken from the cache), linked
//! against the host world (so a component built for another world fails here, at load), and one
//! instance is created and initialised. Calls go through a pool of warm instances; a call that
//! traps, runs out of time or memory, or returns too much fails alone, with an error naming the
//! plugin, the function and the limit, and its instance is thrown away.
//!
//! Plugins get no filesystem, network, environment or clock: the world imports nothing but the
//! `host` (log, progress) and `host-nn` interfaces, and nothing else is linked.

mod bindings;
mod cache;
mod error;
mod nn;
mod plugin;
mod runtime;
mod state;

pub use bindings::types;
pub use cache::{CacheOutcome, CompileCache};
pub use error::{LoadError, RuntimeError};
pub use nn::{Graph, GraphRegistry, NoGraphs, StaticGraphs};
pub use plugin::{LoadReport, Plugin};
pub use runtime::{DiscoveredPlugin, LoadOptions, Runtime, RuntimeConfig, discover};
pub use tessera_manifest::{Digest, Limits, Manifest};

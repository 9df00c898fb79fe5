//! `host-nn`: networks that run in the host and that plugins load by name, if their manifest
//! allows the name.

use crate::bindings::host_nn;
use crate::state::State;
use crate::types::{NamedTensor, NnError};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::Resource;

/// A network the host runs on behalf of plugins.
pub trait Graph: Send + Sync {
    /// Computes named outputs from named inputs; an `Err` is reported to the plugin as
    /// `nn-error.failed` (or `invalid-input` when the text starts with `invalid input:`).
    fn compute(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, NnError>;
}

/// Where the runtime finds graphs by name.
pub trait GraphRegistry: Send + Sync {
    fn load(&self, name: &str) -> Option<Arc<dyn Graph>>;
    /// Every name this registry can load, for listings.
    fn names(&self) -> Vec<String>;
}

/// A registry with no graphs (the default until the model crate registers its networks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGraphs;

impl GraphRegistry for NoGraphs {
    fn load(&self, _name: &str) -> Option<Arc<dyn Graph>> {
        None
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A fixed set of graphs, by name.
#[derive(Default, Clone)]
pub struct StaticGraphs {
    graphs: BTreeMap<String, Arc<dyn Graph>>,
}

impl StaticGraphs {
    pub fn with(mut self, name: impl Into<String>, graph: Arc<dyn Graph>) -> Self {
        self.graphs.insert(name.into(), graph);
        self
    }
}

impl GraphRegistry for StaticGraphs {
    fn load(&self, name: &str) -> Option<Arc<dyn Graph>> {
        self.graphs.get(name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.graphs.keys().cloned().collect()
    }
}

/// The host-side value behind a guest's `graph` handle.
pub struct GraphHandle {
    name: String,
    graph: Arc<dyn Graph>,
}

impl host_nn::Host for State {
    fn load(&mut self, name: String) -> Result<Resource<GraphHandle>, NnError> {
        if !self.nn_allowed.contains(&name) {
            let allowed = if self.nn_allowed.is_empty() {
                "none".to_string()
            } else {
                self.nn_allowed.join(", ")
            };
            tracing::warn!(plugin = %self.plugin, graph = %name, "host-nn graph refused by the manifest");
            return Err(NnError::NotAllowed(format!(
                "graph `{name}` is not allowed by plugin `{}`'s manifest (allowed: {allowed})",
                self.plugin
            )));
        }
        let graph = self.graphs.load(&name).ok_or_else(|| {
            NnError::NotFound(format!(
                "no graph named `{name}` is registered in this host"
            ))
        })?;
        self.table
            .push(GraphHandle { name, graph })
            .map_err(|e| NnError::Failed(format!("cannot hold another graph handle: {e}")))
    }
}

impl host_nn::HostGraph for State {
    fn compute(
        &mut self,
        handle: Resource<GraphHandle>,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, NnError> {
        let handle = self
            .table
            .get(&handle)
            .map_err(|e| NnError::Failed(format!("stale graph handle: {e}")))?;
        tracing::debug!(plugin = %self.plugin, graph = %handle.name, "host-nn compute");
        handle.graph.compute(inputs)
    }

    fn drop(&mut self, handle: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

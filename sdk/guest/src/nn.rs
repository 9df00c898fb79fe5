//! Host networks: load a graph by a name the plugin's manifest allows, then compute on named
//! tensors.

pub use crate::bindings::tessera::plugin::host_nn::{Graph, NamedTensor, NnError};

/// Loads a host graph by name (refused with `NnError::NotAllowed` unless the manifest allows it).
pub fn load(name: &str) -> Result<Graph, NnError> {
    crate::bindings::tessera::plugin::host_nn::load(name)
}

/// The error as a sentence.
pub fn describe(e: &NnError) -> String {
    match e {
        NnError::NotAllowed(m) => format!("host-nn: not allowed: {m}"),
        NnError::NotFound(m) => format!("host-nn: not found: {m}"),
        NnError::InvalidInput(m) => format!("host-nn: invalid input: {m}"),
        NnError::Failed(m) => format!("host-nn: failed: {m}"),
    }
}

impl From<NnError> for crate::PluginError {
    fn from(e: NnError) -> Self {
        let message = describe(&e);
        match e {
            NnError::NotAllowed(_) | NnError::NotFound(_) => {
                crate::PluginError::Unsupported(message)
            }
            NnError::InvalidInput(_) => crate::PluginError::InvalidInput(message),
            NnError::Failed(_) => crate::PluginError::Other(message),
        }
    }
}

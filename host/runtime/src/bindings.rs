//! Host bindings of the `tessera:plugin` world, generated from `sdk/wit`.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../sdk/wit",
    with: {
        "tessera:plugin/host-nn.graph": crate::nn::GraphHandle,
    },
    additional_derives: [PartialEq],
});

pub use tessera::plugin::host_nn;

/// The value types of the plugin contract, as the host sees them.
pub mod types {
    pub use super::tessera::plugin::host_nn::{NamedTensor, NnError};
    pub use super::tessera::plugin::types::*;

    /// Bytes a value occupies when it crosses the sandbox boundary (payloads only; used for the
    /// input and output caps).
    pub trait PayloadSize {
        fn payload_size(&self) -> usize;
    }

    impl PayloadSize for Value {
        fn payload_size(&self) -> usize {
            match self {
                Value::Text(s) | Value::Json(s) => s.len(),
                Value::Image(image) => image.mime.len() + image.data.len(),
                Value::Tensor(t) => t.data.len() + 4 * t.shape.len(),
                Value::Bytes(b) => b.len(),
            }
        }
    }

    impl PayloadSize for Tokens {
        fn payload_size(&self) -> usize {
            self.domain.len() + 4 * (self.ids.len() + self.shape.len())
        }
    }

    impl PayloadSize for Params {
        fn payload_size(&self) -> usize {
            self.iter().map(|(k, v)| k.len() + v.len()).sum()
        }
    }

    impl PayloadSize for Detokenized {
        fn payload_size(&self) -> usize {
            self.artifacts
                .iter()
                .map(|a| a.name.len() + a.value.payload_size())
                .sum::<usize>()
                + self.warnings.iter().map(String::len).sum::<usize>()
        }
    }

    /// A plugin error as a sentence (the generated `Display` shows the Rust variant syntax).
    pub fn describe_plugin_error(error: &PluginError) -> String {
        match error {
            PluginError::InvalidInput(m) => format!("invalid input: {m}"),
            PluginError::Unsupported(m) => format!("unsupported: {m}"),
            PluginError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            PluginError::NotInitialized(m) => format!("not initialized: {m}"),
            PluginError::Other(m) => m.clone(),
        }
    }

    impl std::fmt::Display for ModalityKind {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                ModalityKind::Sequence => "sequence",
                ModalityKind::ImageTokens => "image-tokens",
                ModalityKind::GlobalTokens => "global-tokens",
            })
        }
    }
}

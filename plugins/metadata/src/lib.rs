//! The `metadata` plugin: a JSON object of 4M metadata fields (`original_width`, `brightness`,
//! `n_humans`, ... — the 21 fields of 4M-21) <-> `v1=<type> v0=<value>` chunks, binned and
//! clipped as the reference does; decoding maps bins back as the reference's `decode_metadata`.

use tessera_sdk::prelude::*;
use tessera_text::TextTokenizer;
use tessera_text::metadata;
use tessera_text::plugin::{sequence_tokens, skip_warnings, to_json};

const DOMAIN: &str = "metadata";
const MAX_TOKENS: u32 = 40;

pub struct Metadata {
    tokenizer: TextTokenizer,
}

impl ModalityPlugin for Metadata {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "metadata",
            env!("CARGO_PKG_VERSION"),
            "Image metadata as 4M value tokens",
        )
        .with_modality(ModalityInfo::sequence(DOMAIN, None, Some(MAX_TOKENS)))
    }

    fn init(assets: Assets, _config: Params) -> Result<Self, PluginError> {
        Ok(Self {
            tokenizer: tessera_text::plugin::load_tokenizer(&assets)?,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        let chunks = metadata::parse_metadata_json(input.as_text()?.as_bytes())?;
        let ids = metadata::metadata_to_ids(&self.tokenizer, &chunks)?;
        sequence_tokens(&self.tokenizer, domain, ids, params)
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        let decoded = metadata::ids_to_metadata(&self.tokenizer, &tokens.ids);
        let values: serde_json::Map<String, serde_json::Value> = decoded
            .values
            .iter()
            .map(|(field, value)| {
                Ok((
                    (*field).to_string(),
                    serde_json::from_str(&to_json(value)?)
                        .map_err(|e| PluginError::Other(e.to_string()))?,
                ))
            })
            .collect::<Result<_, PluginError>>()?;
        Ok(Detokenized {
            artifacts: vec![
                Artifact {
                    name: "metadata".into(),
                    value: Value::Json(to_json(&values)?),
                },
                Artifact {
                    name: "text".into(),
                    value: Value::Text(self.tokenizer.decode(&tokens.ids)),
                },
            ],
            warnings: skip_warnings(&decoded.skipped),
        })
    }
}

tessera_sdk::export_plugin!(Metadata);

//! The `metadata` plugin: a JSON object of 4M metadata fields (`original_width`, `brightness`,
//! `n_humans`, ... — the 21 fields of 4M-21) <-> `v1=<type> v0=<value>` chunks, binned and
//! clipped as the reference does; decoding maps bins back as the reference's `decode_metadata`.

use tessera_sdk::{Artifact, Detokenized, Params, PluginError, Value};
use tessera_text::TextTokenizer;
use tessera_text::metadata;
use tessera_text::plugin::{TextCodec, TextPlugin, skip_warnings, text_artifact, to_json};

pub struct MetadataCodec;

impl TextCodec for MetadataCodec {
    const NAME: &'static str = "metadata";
    const DESCRIPTION: &'static str = "Image metadata as 4M value tokens";
    const DOMAIN: &'static str = "metadata";
    const MAX_TOKENS: u32 = 40;

    fn encode(
        tokenizer: &TextTokenizer,
        input: &Value,
        _params: &Params,
    ) -> Result<Vec<u32>, PluginError> {
        let chunks = metadata::parse_metadata_json(input.as_text()?.as_bytes())?;
        Ok(metadata::metadata_to_ids(tokenizer, &chunks)?)
    }

    fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> Result<Detokenized, PluginError> {
        let decoded = metadata::ids_to_metadata(tokenizer, ids);
        // `MetadataDecoded` serialises as {"values": {...}, "skipped": [...]}; the artifact is the
        // values object alone (fields in 4M type-id order), the skips become warnings.
        let rendered: serde_json::Value = serde_json::from_str(&to_json(&decoded)?)
            .map_err(|e| PluginError::Other(format!("cannot render metadata: {e}")))?;
        Ok(Detokenized {
            artifacts: vec![
                Artifact {
                    name: "metadata".into(),
                    value: Value::Json(to_json(&rendered["values"])?),
                },
                text_artifact(tokenizer, ids),
            ],
            warnings: skip_warnings(&decoded.skipped),
        })
    }
}

tessera_sdk::export_plugin!(TextPlugin<MetadataCodec>);

//! The `det` plugin: bounding boxes <-> the 4M detection sequence
//! (`v0=xmin v1=ymin v2=xmax v3=ymax <class>` per box, 1000 coordinate bins, boxes ordered by
//! distance to the origin, score threshold 0.6 as the reference's `DetectionTransform`).
//!
//! `tokenize` takes a JSON list of `{label, xmin, ymin, xmax, ymax, score?}` in [0, 1]
//! (parameters: `score_threshold`, `eos`). `detokenize` gives the boxes as JSON with their
//! labels, plus the decoded text; malformed groups in generated ids are skipped and reported as
//! warnings instead of failing the run.

use tessera_sdk::prelude::*;
use tessera_text::TextTokenizer;
use tessera_text::det::{self, DetOptions};
use tessera_text::plugin::{sequence_tokens, skip_warnings, to_json};

const DOMAIN: &str = "det";
const MAX_TOKENS: u32 = 256;

pub struct Det {
    tokenizer: TextTokenizer,
}

impl ModalityPlugin for Det {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "det",
            env!("CARGO_PKG_VERSION"),
            "Bounding boxes as the 4M detection sequence",
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
        let score_threshold = params.parse_or("score_threshold", det::DEFAULT_SCORE_THRESHOLD)?;
        if !(0.0..=1.0).contains(&score_threshold) {
            return Err(PluginError::invalid(format!(
                "parameter `score_threshold` = {score_threshold} is outside [0, 1]"
            )));
        }
        let boxes = det::parse_boxes_json(input.as_text()?.as_bytes())?;
        let ids = det::det_to_ids(&self.tokenizer, &boxes, DetOptions { score_threshold })?;
        sequence_tokens(&self.tokenizer, domain, ids, params)
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        let decoded = det::ids_to_det(&self.tokenizer, &tokens.ids);
        Ok(Detokenized {
            artifacts: vec![
                Artifact {
                    name: "boxes".into(),
                    value: Value::Json(to_json(&decoded.boxes)?),
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

tessera_sdk::export_plugin!(Det);

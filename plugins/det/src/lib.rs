//! The `det` plugin: bounding boxes <-> the 4M detection sequence
//! (`v0=xmin v1=ymin v2=xmax v3=ymax <class>` per box, 1000 coordinate bins, boxes ordered by
//! distance to the origin, score threshold 0.6 as the reference's `DetectionTransform`).
//!
//! `tokenize` takes a JSON list of `{label, xmin, ymin, xmax, ymax, score?}` in [0, 1]
//! (parameters: `score_threshold`, `eos`). `detokenize` gives the boxes as JSON with their
//! labels, plus the decoded text; malformed groups in generated ids are skipped and reported as
//! warnings instead of failing the run.

use tessera_sdk::{Artifact, Detokenized, Params, PluginError, Value};
use tessera_text::TextTokenizer;
use tessera_text::det::{self, DetOptions};
use tessera_text::plugin::{TextCodec, TextPlugin, skip_warnings, text_artifact, to_json};

pub struct DetCodec;

impl TextCodec for DetCodec {
    const NAME: &'static str = "det";
    const DESCRIPTION: &'static str = "Bounding boxes as the 4M detection sequence";
    const DOMAIN: &'static str = "det";
    const MAX_TOKENS: u32 = 256;

    fn encode(
        tokenizer: &TextTokenizer,
        input: &Value,
        params: &Params,
    ) -> Result<Vec<u32>, PluginError> {
        let score_threshold = params.parse_or("score_threshold", det::DEFAULT_SCORE_THRESHOLD)?;
        if !(0.0..=1.0).contains(&score_threshold) {
            return Err(PluginError::invalid(format!(
                "parameter `score_threshold` = {score_threshold} is outside [0, 1]"
            )));
        }
        let boxes = det::parse_boxes_json(input.as_text()?.as_bytes())?;
        Ok(det::det_to_ids(
            tokenizer,
            &boxes,
            DetOptions { score_threshold },
        )?)
    }

    fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> Result<Detokenized, PluginError> {
        let decoded = det::ids_to_det(tokenizer, ids);
        Ok(Detokenized {
            artifacts: vec![
                Artifact {
                    name: "boxes".into(),
                    value: Value::Json(to_json(&decoded.boxes)?),
                },
                text_artifact(tokenizer, ids),
            ],
            warnings: skip_warnings(&decoded.skipped),
        })
    }
}

tessera_sdk::export_plugin!(TextPlugin<DetCodec>);

//! The `color-palette` plugin: 1–7 RGB colours <-> the 4M palette sequence (`v1=<k>` followed
//! by `v0=` R, G, B values per colour). `tokenize` takes a JSON list of `[r, g, b]` or
//! `"#rrggbb"`; `detokenize` gives the colours as JSON and as a PNG swatch.

use tessera_sdk::{Artifact, Detokenized, Params, PluginError, Value};
use tessera_text::TextTokenizer;
use tessera_text::palette;
use tessera_text::plugin::{TextCodec, TextPlugin, skip_warnings, text_artifact, to_json};

/// Side of one colour square in the swatch, in pixels.
const SWATCH_CELL: u32 = 48;

pub struct PaletteCodec;

impl TextCodec for PaletteCodec {
    const NAME: &'static str = "color-palette";
    const DESCRIPTION: &'static str = "Colour palettes as 4M value tokens";
    const DOMAIN: &'static str = "color_palette";
    const MAX_TOKENS: u32 = 23;

    fn encode(
        tokenizer: &TextTokenizer,
        input: &Value,
        _params: &Params,
    ) -> Result<Vec<u32>, PluginError> {
        let colours = palette::parse_palette_json(input.as_text()?.as_bytes())?;
        Ok(palette::palette_to_ids(tokenizer, &colours)?)
    }

    fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> Result<Detokenized, PluginError> {
        let decoded = palette::ids_to_palette(tokenizer, ids);
        Ok(Detokenized {
            artifacts: vec![
                Artifact {
                    name: "palette".into(),
                    value: Value::Json(to_json(&decoded.colours)?),
                },
                Artifact {
                    name: "swatch".into(),
                    value: Value::png(palette::palette_swatch_png(&decoded.colours, SWATCH_CELL)),
                },
                text_artifact(tokenizer, ids),
            ],
            warnings: skip_warnings(&decoded.skipped),
        })
    }
}

tessera_sdk::export_plugin!(TextPlugin<PaletteCodec>);

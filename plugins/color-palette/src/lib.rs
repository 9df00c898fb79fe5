//! The `color-palette` plugin: 1–7 RGB colours <-> the 4M palette sequence (`v1=<k>` followed
//! by `v0=` R, G, B values per colour). `tokenize` takes a JSON list of `[r, g, b]` or
//! `"#rrggbb"`; `detokenize` gives the colours as JSON and as a PNG swatch.

use tessera_sdk::prelude::*;
use tessera_text::TextTokenizer;
use tessera_text::palette;
use tessera_text::plugin::{sequence_tokens, skip_warnings, to_json};

const DOMAIN: &str = "color_palette";
const MAX_TOKENS: u32 = 23;
/// Side of one colour square in the swatch, in pixels.
const SWATCH_CELL: u32 = 48;

pub struct ColorPalette {
    tokenizer: TextTokenizer,
}

impl ModalityPlugin for ColorPalette {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "color-palette",
            env!("CARGO_PKG_VERSION"),
            "Colour palettes as 4M value tokens",
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
        let colours = palette::parse_palette_json(input.as_text()?.as_bytes())?;
        let ids = palette::palette_to_ids(&self.tokenizer, &colours)?;
        sequence_tokens(&self.tokenizer, domain, ids, params)
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        let decoded = palette::ids_to_palette(&self.tokenizer, &tokens.ids);
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
                Artifact {
                    name: "text".into(),
                    value: Value::Text(self.tokenizer.decode(&tokens.ids)),
                },
            ],
            warnings: skip_warnings(&decoded.skipped),
        })
    }
}

tessera_sdk::export_plugin!(ColorPalette);

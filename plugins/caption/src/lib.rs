//! The `caption` plugin: captions <-> 4M WordPiece token ids, exactly as the reference tokenizer
//! (no special tokens added, special tokens kept when decoding).
//!
//! Parameters of `tokenize`: `eos = true` appends `[EOS]`, as 4M's caption transform does for
//! training targets.

use tessera_sdk::{Detokenized, Params, PluginError, Value};
use tessera_text::TextTokenizer;
use tessera_text::plugin::{TextCodec, TextPlugin};

pub struct CaptionCodec;

impl TextCodec for CaptionCodec {
    const NAME: &'static str = "caption";
    const DESCRIPTION: &'static str = "Captions as 4M WordPiece tokens";
    const DOMAIN: &'static str = "caption";
    const MAX_TOKENS: u32 = 256;

    fn encode(
        tokenizer: &TextTokenizer,
        input: &Value,
        _params: &Params,
    ) -> Result<Vec<u32>, PluginError> {
        Ok(tokenizer.encode(input.as_text()?))
    }

    fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> Result<Detokenized, PluginError> {
        Ok(Detokenized::single(
            "caption",
            Value::Text(tokenizer.decode(ids)),
        ))
    }
}

tessera_sdk::export_plugin!(TextPlugin<CaptionCodec>);

//! The `caption` plugin: captions <-> 4M WordPiece token ids, exactly as the reference tokenizer
//! (no special tokens added, special tokens kept when decoding).
//!
//! Parameters of `tokenize`: `eos = true` appends `[EOS]`, as 4M's caption transform does for
//! training targets.

use tessera_sdk::prelude::*;
use tessera_text::TextTokenizer;

const DOMAIN: &str = "caption";
/// 4M's caption token budget.
const MAX_TOKENS: u32 = 256;

pub struct Caption {
    tokenizer: TextTokenizer,
}

impl ModalityPlugin for Caption {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "caption",
            env!("CARGO_PKG_VERSION"),
            "Captions as 4M WordPiece tokens",
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
        let ids = self.tokenizer.encode(input.as_text()?);
        tessera_text::plugin::sequence_tokens(&self.tokenizer, domain, ids, params)
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        let mut out =
            Detokenized::single("caption", Value::Text(self.tokenizer.decode(&tokens.ids)));
        let vocab = self.tokenizer.vocab_size();
        let unknown = tokens
            .ids
            .iter()
            .filter(|&&id| id as usize >= vocab)
            .count();
        if unknown > 0 {
            out = out.warn(format!(
                "skipped {unknown} id(s) outside the vocabulary of {vocab}"
            ));
        }
        Ok(out)
    }
}

tessera_sdk::export_plugin!(Caption);

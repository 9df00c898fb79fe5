//! Glue shared by the text-sequence plugins (feature `sdk`): loading the vocabulary asset and
//! turning [`TextError`]s into plugin errors.

use crate::{TextError, TextTokenizer};
use tessera_sdk::{Assets, PluginError};

/// The name of the vocabulary asset in every text plugin's manifest.
pub const VOCAB_ASSET: &str = "vocab";

/// Builds the tokenizer from the `vocab` asset.
pub fn load_tokenizer(assets: &Assets) -> Result<TextTokenizer, PluginError> {
    TextTokenizer::from_json_bytes(assets.require(VOCAB_ASSET)?)
        .map_err(|e| PluginError::NotInitialized(format!("asset `{VOCAB_ASSET}`: {e}")))
}

impl From<TextError> for PluginError {
    fn from(e: TextError) -> Self {
        match e {
            TextError::TokenizerJson { .. }
            | TextError::UnsupportedTokenizer { .. }
            | TextError::VocabularyLayout { .. } => PluginError::NotInitialized(e.to_string()),
            other => PluginError::InvalidInput(other.to_string()),
        }
    }
}

/// Ids as a sequence of `domain`, with `[EOS]` appended when the call's `eos` parameter is true
/// (4M appends it to training targets and full inputs).
pub fn sequence_tokens(
    tokenizer: &TextTokenizer,
    domain: &str,
    mut ids: Vec<u32>,
    params: &tessera_sdk::Params,
) -> Result<tessera_sdk::Tokens, PluginError> {
    if params.parse_or("eos", false)? {
        ids.push(tokenizer.layout().eos_id());
    }
    Ok(tessera_sdk::Tokens::sequence(domain, ids))
}

/// One warning per skipped run of tokens, for `Detokenized::warnings`.
pub fn skip_warnings(skipped: &[crate::SkippedTokens]) -> Vec<String> {
    skipped
        .iter()
        .map(|s| format!("skipped tokens {}..{}: {}", s.start, s.end, s.reason))
        .collect()
}

/// JSON text of a value the plugins render (their own serialisable types never fail).
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value).map_err(|e| PluginError::Other(format!("cannot render JSON: {e}")))
}

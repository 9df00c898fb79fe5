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
            TextError::TokenizerJson { .. } | TextError::UnsupportedTokenizer { .. } | TextError::VocabularyLayout { .. } => {
                PluginError::NotInitialized(e.to_string())
            }
            other => PluginError::InvalidInput(other.to_string()),
        }
    }
}

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

/// One 4M text-sequence domain: how its values become ids and back. [`TextPlugin`] turns an
/// implementation into a whole plugin (describe, vocabulary loading at `init`, `[EOS]` handling).
pub trait TextCodec: 'static {
    /// Plugin name reported by `describe`.
    const NAME: &'static str;
    /// One-line description reported by `describe`.
    const DESCRIPTION: &'static str;
    /// The 4M domain served.
    const DOMAIN: &'static str;
    /// The domain's token budget in 4M.
    const MAX_TOKENS: u32;

    /// Ids of a user value (without `[EOS]`; [`TextPlugin`] appends it on request).
    fn encode(
        tokenizer: &TextTokenizer,
        input: &tessera_sdk::Value,
        params: &tessera_sdk::Params,
    ) -> Result<Vec<u32>, PluginError>;

    /// Values rendered from generated ids; the first artifact is the primary one.
    fn decode(
        tokenizer: &TextTokenizer,
        ids: &[u32],
    ) -> Result<tessera_sdk::Detokenized, PluginError>;
}

/// A plugin serving one [`TextCodec`] with the 4M vocabulary given as the `vocab` asset.
pub struct TextPlugin<C> {
    tokenizer: TextTokenizer,
    codec: std::marker::PhantomData<C>,
}

impl<C: TextCodec> tessera_sdk::ModalityPlugin for TextPlugin<C> {
    fn describe() -> tessera_sdk::PluginInfo {
        // The plugin's own crate version is not visible here; the text crate's stands in, as
        // every text plugin is built from this workspace with one version.
        tessera_sdk::PluginInfo::new(C::NAME, env!("CARGO_PKG_VERSION"), C::DESCRIPTION)
            .with_modality(tessera_sdk::ModalityInfo::sequence(
                C::DOMAIN,
                None,
                Some(C::MAX_TOKENS),
            ))
    }

    fn describe_initialised(&self) -> tessera_sdk::PluginInfo {
        tessera_sdk::PluginInfo::new(C::NAME, env!("CARGO_PKG_VERSION"), C::DESCRIPTION)
            .with_modality(tessera_sdk::ModalityInfo::sequence(
                C::DOMAIN,
                Some(self.tokenizer.vocab_size() as u32),
                Some(C::MAX_TOKENS),
            ))
    }

    fn init(assets: Assets, _config: tessera_sdk::Params) -> Result<Self, PluginError> {
        Ok(Self {
            tokenizer: load_tokenizer(&assets)?,
            codec: std::marker::PhantomData,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: tessera_sdk::Value,
        params: &tessera_sdk::Params,
    ) -> Result<tessera_sdk::Tokens, PluginError> {
        let ids = C::encode(&self.tokenizer, &input, params)?;
        sequence_tokens(&self.tokenizer, domain, ids, params)
    }

    fn detokenize(
        &mut self,
        tokens: tessera_sdk::Tokens,
        _params: &tessera_sdk::Params,
    ) -> Result<tessera_sdk::Detokenized, PluginError> {
        let mut out = C::decode(&self.tokenizer, &tokens.ids)?;
        let vocab = self.tokenizer.vocab_size();
        let unknown = tokens
            .ids
            .iter()
            .filter(|&&id| id as usize >= vocab)
            .count();
        if unknown > 0 {
            out.warnings.push(format!(
                "skipped {unknown} id(s) outside the vocabulary of {vocab}"
            ));
        }
        Ok(out)
    }
}

/// The decoded text (special tokens kept, as the reference decodes) as an artifact named `text`.
pub fn text_artifact(tokenizer: &TextTokenizer, ids: &[u32]) -> tessera_sdk::Artifact {
    tessera_sdk::Artifact {
        name: "text".into(),
        value: tessera_sdk::Value::Text(tokenizer.decode(ids)),
    }
}

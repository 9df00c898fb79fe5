//! The text vocabulary: a WordPiece model trained with the `tokenizers` crate on captions of
//! shapes-world scenes. Its added tokens follow the 4M layout exactly — `[PAD]` 0, `[UNK]` 1,
//! `[SOS]` 2, `[EOS]` 3, sentinels `[S_0]`…`[S_199]` at 4…203, value tokens `v0=0`…`v3=999` at
//! 204…4203, then the class names (the world's object classes where 4M has COCO's) — followed by
//! the word pieces learned from the captions. Lower-casing BERT normaliser and pre-tokeniser, as
//! the reference vocabulary.

use tessera_world::SemanticClass;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

/// Sentinels `[S_0]`…`[S_199]`, as in 4M.
pub const SENTINELS: usize = 200;
/// Value tokens per axis (`v0=0`…`v0=999`), as in 4M's coordinate bins.
pub const VALUE_BINS: usize = 1000;

/// What to train on and how large the vocabulary may grow.
#[derive(Debug, Clone)]
pub struct VocabOptions {
    /// Scenes whose captions form the corpus.
    pub scenes: u64,
    /// Seed of the first scene; scenes are `first_seed..first_seed + scenes`.
    pub first_seed: u64,
    /// Total vocabulary size, added tokens included (the trainer stops earlier when the corpus
    /// has no more merges).
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged (1: every corpus word ends up whole).
    pub min_frequency: u64,
}

impl Default for VocabOptions {
    fn default() -> Self {
        Self {
            scenes: 4000,
            first_seed: 0,
            vocab_size: 4208 + 2000,
            min_frequency: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainVocabError {
    #[error("rendering scene {seed} for its caption")]
    World {
        seed: u64,
        #[source]
        source: tessera_world::WorldError,
    },
    #[error("the corpus is empty (0 scenes)")]
    EmptyCorpus,
    #[error("vocabulary size {requested} does not leave room beyond the {added} added tokens")]
    TooSmall { requested: usize, added: usize },
    #[error("training the WordPiece model: {0}")]
    Tokenizers(String),
}

/// The added tokens in 4M order, with the world's class names in place of COCO's.
pub fn special_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[SOS]", "[EOS]"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    tokens.extend((0..SENTINELS).map(|i| format!("[S_{i}]")));
    for axis in 0..4 {
        tokens.extend((0..VALUE_BINS).map(|value| format!("v{axis}={value}")));
    }
    tokens.extend(
        SemanticClass::ALL
            .into_iter()
            .filter(|class| class.is_object())
            .map(|class| class.name().to_owned()),
    );
    tokens
}

/// The captions of the corpus scenes, in seed order.
pub fn world_corpus(options: &VocabOptions) -> Result<Vec<String>, TrainVocabError> {
    if options.scenes == 0 {
        return Err(TrainVocabError::EmptyCorpus);
    }
    (options.first_seed..options.first_seed + options.scenes)
        .map(|seed| {
            tessera_world::generate_scene(seed)
                .map(|scene| scene.caption)
                .map_err(|source| TrainVocabError::World { seed, source })
        })
        .collect()
}

/// Trains the vocabulary on `corpus` and returns the tokenizer file (HF `tokenizers` JSON).
///
/// The `tokenizers` trainer breaks ties between equally frequent pairs by hash order, so two runs
/// can learn different intermediate pieces. The result is therefore made canonical: it keeps the
/// added tokens, the alphabet (`c` and `##c`) and exactly the tokens the trained model uses on
/// the corpus (with the default options, every corpus word whole), renumbered in a fixed order.
/// Dropping pieces the model never picks on the corpus cannot change how it encodes the corpus.
pub fn train_vocab(corpus: &[String], options: &VocabOptions) -> Result<String, TrainVocabError> {
    let specials = special_tokens();
    if options.vocab_size <= specials.len() {
        return Err(TrainVocabError::TooSmall {
            requested: options.vocab_size,
            added: specials.len(),
        });
    }
    let failed = |e: tokenizers::Error| TrainVocabError::Tokenizers(e.to_string());
    let model = WordPiece::builder()
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(failed)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(options.vocab_size)
        .min_frequency(options.min_frequency)
        .show_progress(false)
        .special_tokens(
            specials
                .iter()
                .map(|token| AddedToken::from(token.clone(), true))
                .collect(),
        )
        .continuing_subword_prefix("##".into())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, corpus.iter())
        .map_err(failed)?;
    let mut used = std::collections::BTreeSet::new();
    for text in corpus {
        let encoding = tokenizer.encode(text.as_str(), false).map_err(failed)?;
        used.extend(encoding.get_tokens().iter().cloned());
    }
    let json = tokenizer.to_string(false).map_err(failed)?;
    canonical(&json, specials.len(), &used)
}

/// Characters every vocabulary has, seen in the corpus or not, alone and as `##` continuations,
/// so that any lower-case ASCII word or number encodes without `[UNK]`.
fn base_alphabet() -> impl Iterator<Item = char> {
    ('a'..='z')
        .chain('0'..='9')
        .chain("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars())
}

/// Keeps the added tokens (ids `0..added`), the alphabet (the corpus's and the base one, alone
/// and as `##` continuations) and the `used` tokens, renumbered: characters, then `##`
/// characters, then the other tokens, each sorted.
fn canonical(
    json: &str,
    added: usize,
    used: &std::collections::BTreeSet<String>,
) -> Result<String, TrainVocabError> {
    let malformed = |what: &str| TrainVocabError::Tokenizers(format!("trained tokenizer: {what}"));
    let mut file: serde_json::Value =
        serde_json::from_str(json).map_err(|e| malformed(&e.to_string()))?;
    let vocab = file["model"]["vocab"]
        .as_object()
        .ok_or_else(|| malformed("no model.vocab"))?;
    let mut specials: Vec<(u64, String)> = Vec::new();
    let mut characters: std::collections::BTreeSet<char> = base_alphabet().collect();
    let mut words = Vec::new();
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| malformed("a non-integer id"))?;
        if (id as usize) < added {
            specials.push((id, token.clone()));
        } else if let Some(c) = single_char(token) {
            characters.insert(c);
        } else if let Some(c) = token.strip_prefix("##").and_then(single_char) {
            characters.insert(c);
        } else if used.contains(token) {
            words.push(token.clone());
        }
    }
    specials.sort();
    words.sort();
    let characters: Vec<String> = characters.iter().map(char::to_string).collect();
    let continuations: Vec<String> = characters.iter().map(|c| format!("##{c}")).collect();
    let mut canonical = serde_json::Map::new();
    for (id, token) in &specials {
        canonical.insert(token.clone(), (*id).into());
    }
    for (offset, token) in characters
        .iter()
        .chain(&continuations)
        .chain(&words)
        .enumerate()
    {
        canonical.insert(token.clone(), (added + offset).into());
    }
    file["model"]["vocab"] = serde_json::Value::Object(canonical);
    serde_json::to_string_pretty(&file).map_err(|e| malformed(&e.to_string()))
}

fn single_char(token: &str) -> Option<char> {
    let mut chars = token.chars();
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

//! tessera-train: training on one machine. Today: tessera's own WordPiece text vocabulary
//! ([`vocab`]), trained on the shapes world's captions with the 4M layout of added tokens, so the
//! same text plugins serve tessera's model and the released 4M models with only the vocabulary
//! asset changed.

pub mod vocab;

pub use vocab::{TrainVocabError, VocabOptions, special_tokens, train_vocab, world_corpus};

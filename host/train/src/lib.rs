//! tessera-train: training on one machine. tessera's own WordPiece text vocabulary ([`vocab`]),
//! and the 4M core ([`trainer`]): the reference's masking objective ([`masking`],
//! [`objective`]) on token datasets ([`data`], [`world_source`]), AdamW with a warm-up + cosine
//! schedule ([`optim`]), exact resume, checkpoints in the released 4M layout that also keep the
//! run's time so far ([`run_time`]); and the image tokenizers ([`tokenizer_trainer`]) on
//! shapes-world images ([`image_data`]), whose token grids then join the core's data
//! ([`image_tokens`]).

pub mod core_config;
pub mod data;
pub mod error;
pub mod image_data;
pub mod image_tokens;
pub mod init;
pub mod masking;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod rng;
pub mod run_time;
pub mod tokenizer_config;
pub mod tokenizer_trainer;
pub mod trainer;
pub mod vocab;
pub mod world_source;

pub use core_config::CoreTrainConfig;
pub use data::{DomainTokens, InMemoryDataset, TokenDataset, TokenSample};
pub use error::TrainError;
pub use image_data::{ImageDataset, ImageSample};
pub use image_tokens::ImageTokenizers;
pub use rng::TrainRng;
pub use run_time::{InvocationStart, SPENT_TIME_FILE, SpentTime, read_spent_time};
pub use tokenizer_config::{QuantizerConfig, TokDomain, TokenizerTrainConfig, VitDims};
pub use tokenizer_trainer::{TokenizerStepReport, TokenizerTrainer, TokenizerTrainerState};
pub use trainer::{CoreTrainer, StepReport, TrainerState, checkpoint_dir, latest_checkpoint};
pub use vocab::{TrainVocabError, VocabOptions, special_tokens, train_vocab, world_corpus};
pub use world_source::{
    WORLD_SEQUENCE_DOMAINS, world_dataset, world_dataset_with_images, world_sample,
};

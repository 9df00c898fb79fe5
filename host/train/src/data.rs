//! Token datasets for core training: per sample, per domain, the token ids the 4M objective masks.
//! Sequence domains hold WordPiece ids (as a flat list, or as chunks that are masked whole, like
//! the reference's metadata); image-like domains hold a pre-tokenised grid (the output of a
//! modality tokenizer, row-major).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One domain's tokens in one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainTokens {
    /// A text-like sequence, without `[EOS]` (the objective appends it).
    Sequence(Vec<u32>),
    /// A text-like sequence made of chunks in no particular order, shuffled for every sample and
    /// span-masked whole (`v1=<type> v0=<value>` pairs of metadata).
    Chunks(Vec<Vec<u32>>),
    /// An image-like token grid, row-major, `side × side` ids.
    Grid(Vec<u32>),
}

/// One training sample: domain name → tokens.
pub type TokenSample = BTreeMap<String, DomainTokens>;

/// Random access to token samples.
pub trait TokenDataset {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index` (< `len()`).
    fn sample(&self, index: usize) -> Result<TokenSample>;
}

/// Samples held in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InMemoryDataset {
    pub samples: Vec<TokenSample>,
}

impl TokenDataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample(&self, index: usize) -> Result<TokenSample> {
        Ok(self.samples[index].clone())
    }
}

impl InMemoryDataset {
    /// Read a JSON-lines file, one sample (a JSON object of domains) per line.
    pub fn read_jsonl(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| TrainError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut samples = Vec::new();
        for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| TrainError::Io {
                path: path.to_owned(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            samples.push(
                serde_json::from_str(&line).map_err(|e| TrainError::BadFile {
                    path: path.to_owned(),
                    reason: format!("line {}: {e}", number + 1),
                })?,
            );
        }
        Ok(Self { samples })
    }

    /// Write the samples as JSON lines.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let io = |source| TrainError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        for sample in &self.samples {
            let line = serde_json::to_string(sample).expect("samples serialise");
            writeln!(out, "{line}").map_err(io)?;
        }
        out.flush().map_err(io)
    }
}

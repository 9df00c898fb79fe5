//! The crate's error type: every failure a caller can cause or meet, with the values that explain it.

use std::path::PathBuf;

/// Largest accepted seed: 2^53 - 1, so that a seed written to JSON survives readers that hold numbers
/// as doubles (JavaScript, the web UI, many JSON tools) and the same seed always means the same scene.
pub const MAX_SEED: u64 = (1 << 53) - 1;

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("seed {seed} is out of range: seeds run from 0 to {max}")]
    SeedOutOfRange { seed: u64, max: u64 },

    #[error("invalid seed {text:?}: expected an integer from 0 to {max}")]
    InvalidSeed { text: String, max: u64 },

    #[error("a dataset needs at least one scene (count was {count})")]
    EmptyDataset { count: usize },

    #[error("{count} scenes starting at seed {first_seed} would run past the largest seed {max}")]
    SeedRangeOverflow {
        first_seed: u64,
        count: usize,
        max: u64,
    },

    #[error("{count} scenes do not fit in one tensor shard on this platform")]
    DatasetTooLarge { count: usize },

    #[error("output path {} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot encode PNG {}: {message}", path.display())]
    PngEncoding { path: PathBuf, message: String },

    #[error("cannot {action} JSON {}: {source}", path.display())]
    Json {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot start {threads} worker threads: {message}")]
    ThreadPool { threads: usize, message: String },

    #[error("dataset at {} is malformed: {reason}", path.display())]
    MalformedDataset { path: PathBuf, reason: String },

    #[error("scene index {index} is out of range for a dataset of {len} scenes")]
    SceneIndexOutOfRange { index: usize, len: usize },
}

impl WorldError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> WorldError {
        let path = path.into();
        move |source| WorldError::Io {
            action,
            path,
            source,
        }
    }
}

/// Checks that a seed is in 0..=[`MAX_SEED`].
pub fn validate_seed(seed: u64) -> Result<u64, WorldError> {
    if seed > MAX_SEED {
        Err(WorldError::SeedOutOfRange {
            seed,
            max: MAX_SEED,
        })
    } else {
        Ok(seed)
    }
}

/// Parses a seed given as text (for example on the command line), with a clear error when it is not one.
pub fn parse_seed(text: &str) -> Result<u64, WorldError> {
    let seed = text
        .trim()
        .parse::<u64>()
        .map_err(|_| WorldError::InvalidSeed {
            text: text.to_string(),
            max: MAX_SEED,
        })?;
    validate_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_out_of_range_ones_are_refused() {
        assert_eq!(parse_seed(" 42 ").unwrap(), 42);
        assert_eq!(parse_seed(&MAX_SEED.to_string()).unwrap(), MAX_SEED);
        assert!(matches!(
            parse_seed("-1"),
            Err(WorldError::InvalidSeed { .. })
        ));
        assert!(matches!(
            parse_seed("twelve"),
            Err(WorldError::InvalidSeed { .. })
        ));
        let too_big = parse_seed(&(MAX_SEED + 1).to_string()).unwrap_err();
        assert!(too_big.to_string().contains("out of range"), "{too_big}");
    }
}

//! Conveniences over the generated types: parameters, assets, values, tokens and tensors.

use crate::{
    Artifact, Asset, Detokenized, Dtype, Image, ModalityInfo, ModalityKind, PluginError,
    PluginInfo, Tensor, Tokens, Value,
};
use std::str::FromStr;

/// String parameters of a call or of `init`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, String)>);

impl From<Vec<(String, String)>> for Params {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }
}

impl Params {
    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `key` as `T`, or returns `default` when it is absent; a value that does not parse is
    /// an `invalid-input` error naming the key.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, PluginError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| PluginError::invalid(format!("parameter `{key}` = {raw:?}: {e}"))),
        }
    }

    /// Keys not in `known`, for plugins that refuse unknown parameters.
    pub fn unknown<'a>(&'a self, known: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !known.contains(k))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The files a plugin's manifest declares, given at `init`.
#[derive(Debug, Clone, Default)]
pub struct Assets(Vec<Asset>);

impl From<Vec<Asset>> for Assets {
    fn from(assets: Vec<Asset>) -> Self {
        Self(assets)
    }
}

impl Assets {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.data.as_slice())
    }

    /// The asset's bytes, or a `not-initialized` error saying which asset is missing.
    pub fn require(&self, name: &str) -> Result<&[u8], PluginError> {
        self.get(name).ok_or_else(|| {
            let given: Vec<&str> = self.0.iter().map(|a| a.name.as_str()).collect();
            PluginError::NotInitialized(format!(
                "asset `{name}` was not given (given: {}); declare it under [assets.{name}] in plugin.toml",
                if given.is_empty() { "none".to_string() } else { given.join(", ") }
            ))
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|a| a.name.as_str())
    }
}

impl PluginError {
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginError::InvalidInput(message.into())
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        PluginError::Unsupported(message.into())
    }
    pub fn not_initialized() -> Self {
        PluginError::NotInitialized("`init` has not run successfully on this instance".into())
    }

    /// The error as a sentence (the generated `Display` shows the Rust variant syntax).
    pub fn describe(&self) -> String {
        match self {
            PluginError::InvalidInput(m) => format!("invalid input: {m}"),
            PluginError::Unsupported(m) => format!("unsupported: {m}"),
            PluginError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            PluginError::NotInitialized(m) => format!("not initialized: {m}"),
            PluginError::Other(m) => m.clone(),
        }
    }
}

impl Value {
    /// The kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Json(_) => "json",
            Value::Image(_) => "image",
            Value::Tensor(_) => "tensor",
            Value::Bytes(_) => "bytes",
        }
    }

    /// The text of a `text` or `json` value, or of a `bytes` value holding UTF-8.
    pub fn as_text(&self) -> Result<&str, PluginError> {
        match self {
            Value::Text(s) | Value::Json(s) => Ok(s),
            Value::Bytes(bytes) => std::str::from_utf8(bytes).map_err(|e| {
                PluginError::invalid(format!(
                    "text is not valid UTF-8: invalid byte at offset {}",
                    e.valid_up_to()
                ))
            }),
            other => Err(PluginError::invalid(format!(
                "expected text, got a {} value",
                other.kind()
            ))),
        }
    }

    /// The image of an `image` value (or raw bytes, taken as an encoded image).
    pub fn as_image(&self) -> Result<&[u8], PluginError> {
        match self {
            Value::Image(Image { data, .. }) | Value::Bytes(data) => Ok(data),
            other => Err(PluginError::invalid(format!(
                "expected an image, got a {} value",
                other.kind()
            ))),
        }
    }

    pub fn png(data: Vec<u8>) -> Self {
        Value::Image(Image {
            mime: "image/png".into(),
            data,
        })
    }
}

impl Tokens {
    /// A sequence of ids of `domain`.
    pub fn sequence(domain: &str, ids: Vec<u32>) -> Self {
        let shape = vec![ids.len() as u32];
        Tokens {
            domain: domain.to_string(),
            ids,
            shape,
        }
    }

    /// A row-major `rows × cols` grid of ids; fails when the sizes disagree.
    pub fn grid(domain: &str, ids: Vec<u32>, rows: u32, cols: u32) -> Result<Self, PluginError> {
        if ids.len() as u64 != u64::from(rows) * u64::from(cols) {
            return Err(PluginError::invalid(format!(
                "{} ids do not fill a {rows}x{cols} grid",
                ids.len()
            )));
        }
        Ok(Tokens {
            domain: domain.to_string(),
            ids,
            shape: vec![rows, cols],
        })
    }
}

impl PluginInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            modalities: vec![],
        }
    }

    pub fn with_modality(mut self, modality: ModalityInfo) -> Self {
        self.modalities.push(modality);
        self
    }
}

impl ModalityInfo {
    pub fn sequence(domain: &str, vocab_size: Option<u32>, max_tokens: Option<u32>) -> Self {
        ModalityInfo {
            domain: domain.into(),
            kind: ModalityKind::Sequence,
            vocab_size,
            max_tokens,
        }
    }

    pub fn image_tokens(domain: &str, vocab_size: u32, tokens: u32) -> Self {
        ModalityInfo {
            domain: domain.into(),
            kind: ModalityKind::ImageTokens,
            vocab_size: Some(vocab_size),
            max_tokens: Some(tokens),
        }
    }
}

impl Detokenized {
    /// One artifact and no warnings.
    pub fn single(name: &str, value: Value) -> Self {
        Detokenized {
            artifacts: vec![Artifact {
                name: name.into(),
                value,
            }],
            warnings: vec![],
        }
    }

    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.artifacts.push(Artifact {
            name: name.into(),
            value,
        });
        self
    }

    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

impl Tensor {
    /// An f32 tensor; fails when `data` does not fill `shape`.
    pub fn from_f32(shape: &[u32], data: &[f32]) -> Result<Self, PluginError> {
        let expected: u64 = shape.iter().map(|&d| u64::from(d)).product();
        if expected != data.len() as u64 {
            return Err(PluginError::invalid(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        Ok(Tensor {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// The values of an f32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, PluginError> {
        if !matches!(self.dtype, Dtype::F32) {
            return Err(PluginError::invalid(format!(
                "expected an f32 tensor, got {:?}",
                self.dtype
            )));
        }
        if !self.data.len().is_multiple_of(4) {
            return Err(PluginError::invalid(format!(
                "{} bytes are not whole f32 values",
                self.data.len()
            )));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_with_defaults_and_name_bad_values() {
        let p = Params::from(vec![("t".into(), "0.5".into()), ("n".into(), "x".into())]);
        assert_eq!(p.parse_or("t", 0.6f32).unwrap(), 0.5);
        assert_eq!(p.parse_or("missing", 7u32).unwrap(), 7);
        let err = p.parse_or::<u32>("n", 1).unwrap_err().describe();
        assert!(err.contains("`n`"), "{err}");
        assert_eq!(p.unknown(&["t"]).collect::<Vec<_>>(), vec!["n"]);
    }

    #[test]
    fn tensors_round_trip_and_check_shapes() {
        let t = Tensor::from_f32(&[2, 2], &[1.0, -2.0, 3.5, 0.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.0, 3.5, 0.0]);
        assert!(Tensor::from_f32(&[3], &[1.0]).is_err());
        assert!(Tokens::grid("d", vec![1, 2, 3], 2, 2).is_err());
    }

    #[test]
    fn text_from_bytes_must_be_utf8() {
        assert_eq!(Value::Bytes(b"ok".to_vec()).as_text().unwrap(), "ok");
        let err = Value::Bytes(vec![b'a', 0xff, b'b'])
            .as_text()
            .unwrap_err()
            .describe();
        assert!(err.contains("offset 1"), "{err}");
        assert!(Value::png(vec![]).as_text().is_err());
    }

    #[test]
    fn missing_assets_are_named() {
        let a = Assets::from(vec![Asset {
            name: "vocab".into(),
            data: vec![1],
        }]);
        assert_eq!(a.require("vocab").unwrap(), &[1]);
        let err = a.require("merges").unwrap_err().describe();
        assert!(err.contains("merges") && err.contains("vocab"), "{err}");
    }
}

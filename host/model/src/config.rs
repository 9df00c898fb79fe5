//! The model config: read from `config.json` or from the string metadata of a safetensors header.
//!
//! Released checkpoints store the config twice: as `config.json` and as the safetensors
//! `__metadata__`, where every value is Python's `str()` of the value (`"768"`, `"False"`,
//! `"['caption', 'det']"`). The reference reads the metadata with YAML after replacing `None` by
//! `null`; [`parse_metadata_value`] implements the subset of that syntax these strings use.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::error::{ModelError, Result};

/// Activation of the (gated) MLP, `torch.nn.<act_layer>` in the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// Exact (erf) GELU, `nn.GELU()` default.
    Gelu,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    fn from_torch_name(name: &str) -> Result<Self> {
        Ok(match name {
            "SiLU" => Self::Silu,
            "GELU" => Self::Gelu,
            "ReLU" => Self::Relu,
            "Tanh" => Self::Tanh,
            "Sigmoid" => Self::Sigmoid,
            other => {
                return Err(ModelError::UnsupportedConfig {
                    feature: format!("act_layer = {other}"),
                });
            }
        })
    }

    /// The `torch.nn` class name.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::Silu => "SiLU",
            Self::Gelu => "GELU",
            Self::Relu => "ReLU",
            Self::Tanh => "Tanh",
            Self::Sigmoid => "Sigmoid",
        }
    }
}

/// Every architecture switch of a 4M checkpoint. Defaults are those of the reference `FourM`
/// constructor for keys the `FM` wrapper does not require.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub dim: usize,
    pub encoder_depth: usize,
    pub decoder_depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub proj_bias: bool,
    pub mlp_bias: bool,
    pub norm_bias: bool,
    pub qk_norm: bool,
    pub gated_mlp: bool,
    pub act_layer: Activation,
    /// Absent in the 4M-7 configs, which means shared (the reference default).
    pub share_modality_embeddings: bool,
    pub domains_in: Vec<String>,
    pub domains_out: Vec<String>,
    pub image_size: usize,
    pub patch_size: usize,
}

impl ModelConfig {
    /// Width of the MLP hidden layer, as the reference computes it.
    pub fn mlp_hidden_dim(&self) -> usize {
        let hidden = self.mlp_ratio * self.dim as f64;
        if self.gated_mlp {
            // `int(2 * hidden / 3)`: truncation, e.g. 2048 for D = 768, 5461 for D = 2048.
            (2.0 * hidden / 3.0) as usize
        } else {
            hidden as usize
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// Build from a JSON object (the `config.json` of a released checkpoint).
    pub fn from_json_value(value: &Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| ModelError::MissingConfig {
            reason: "config is not a JSON object".into(),
        })?;
        let map: BTreeMap<String, Value> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self::from_map(&map)
    }

    /// Build from safetensors header metadata (every value a Python `str()`).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Self> {
        let map: BTreeMap<String, Value> = metadata
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    parse_metadata_value(v).map_err(|reason| ModelError::InvalidConfig {
                        field: k.clone(),
                        reason,
                    })?,
                ))
            })
            .collect::<Result<_>>()?;
        Self::from_map(&map)
    }

    fn from_map(map: &BTreeMap<String, Value>) -> Result<Self> {
        let dim = required_usize(map, "dim")?;
        let num_heads = optional_usize(map, "num_heads")?.unwrap_or(12);
        if num_heads == 0 || dim % num_heads != 0 {
            return Err(ModelError::InvalidConfig {
                field: "num_heads".into(),
                reason: format!("{num_heads} heads do not divide dim {dim}"),
            });
        }
        if let Some(n) = optional_usize(map, "num_register_tokens")?
            && n > 0
        {
            return Err(ModelError::UnsupportedConfig {
                feature: format!("num_register_tokens = {n}"),
            });
        }
        let mlp_ratio = match map.get("mlp_ratio") {
            None => 4.0,
            Some(v) => {
                v.as_f64()
                    .filter(|r| *r > 0.0)
                    .ok_or_else(|| ModelError::InvalidConfig {
                        field: "mlp_ratio".into(),
                        reason: format!("expected a positive number, found {v}"),
                    })?
            }
        };
        let act_name = map
            .get("act_layer")
            .ok_or_else(|| ModelError::MissingConfig {
                reason: "field `act_layer` is missing".into(),
            })?;
        let act_name = act_name.as_str().ok_or_else(|| ModelError::InvalidConfig {
            field: "act_layer".into(),
            reason: format!("expected a torch.nn class name, found {act_name}"),
        })?;
        let config = Self {
            dim,
            encoder_depth: optional_usize(map, "encoder_depth")?.unwrap_or(12),
            decoder_depth: optional_usize(map, "decoder_depth")?.unwrap_or(12),
            num_heads,
            mlp_ratio,
            qkv_bias: optional_bool(map, "qkv_bias")?.unwrap_or(true),
            proj_bias: optional_bool(map, "proj_bias")?.unwrap_or(true),
            mlp_bias: optional_bool(map, "mlp_bias")?.unwrap_or(true),
            norm_bias: optional_bool(map, "norm_bias")?.ok_or_else(|| {
                ModelError::MissingConfig {
                    reason: "field `norm_bias` is missing".into(),
                }
            })?,
            qk_norm: optional_bool(map, "qk_norm")?.unwrap_or(false),
            gated_mlp: optional_bool(map, "gated_mlp")?.unwrap_or(false),
            act_layer: Activation::from_torch_name(act_name)?,
            share_modality_embeddings: optional_bool(map, "share_modality_embeddings")?
                .unwrap_or(true),
            domains_in: required_string_list(map, "domains_in")?,
            domains_out: required_string_list(map, "domains_out")?,
            image_size: required_usize(map, "image_size")?,
            patch_size: required_usize(map, "patch_size")?,
        };
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return Err(ModelError::InvalidConfig {
                field: "patch_size".into(),
                reason: format!(
                    "{} does not divide image_size {}",
                    config.patch_size, config.image_size
                ),
            });
        }
        Ok(config)
    }
}

impl ModelConfig {
    /// The config as the released `config.json` writes it.
    pub fn to_json_value(&self) -> Value {
        serde_json::json!({
            "act_layer": self.act_layer.torch_name(),
            "decoder_depth": self.decoder_depth,
            "dim": self.dim,
            "domains_in": self.domains_in,
            "domains_out": self.domains_out,
            "encoder_depth": self.encoder_depth,
            "gated_mlp": self.gated_mlp,
            "image_size": self.image_size,
            "mlp_bias": self.mlp_bias,
            "mlp_ratio": self.mlp_ratio,
            "norm_bias": self.norm_bias,
            "num_heads": self.num_heads,
            "patch_size": self.patch_size,
            "proj_bias": self.proj_bias,
            "qk_norm": self.qk_norm,
            "qkv_bias": self.qkv_bias,
            "share_modality_embeddings": self.share_modality_embeddings,
        })
    }

    /// The config as safetensors header metadata: each value as Python's `str()` of it, which
    /// is what the released files hold and what [`ModelConfig::from_metadata`] reads.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        fn python(value: &Value) -> String {
            match value {
                Value::Bool(true) => "True".into(),
                Value::Bool(false) => "False".into(),
                Value::Null => "None".into(),
                Value::String(s) => s.clone(),
                Value::Number(n) => match n.as_f64() {
                    Some(x) if !n.is_i64() && !n.is_u64() && x.fract() == 0.0 => format!("{x:.1}"),
                    _ => n.to_string(),
                },
                Value::Array(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|item| match item {
                            Value::String(s) => format!("'{s}'"),
                            other => python(other),
                        })
                        .collect();
                    format!("[{}]", parts.join(", "))
                }
                Value::Object(_) => value.to_string(),
            }
        }
        self.to_json_value()
            .as_object()
            .expect("config is an object")
            .iter()
            .map(|(k, v)| (k.clone(), python(v)))
            .collect()
    }
}

fn required_usize(map: &BTreeMap<String, Value>, field: &str) -> Result<usize> {
    optional_usize(map, field)?.ok_or_else(|| ModelError::MissingConfig {
        reason: format!("field `{field}` is missing"),
    })
}

fn optional_usize(map: &BTreeMap<String, Value>, field: &str) -> Result<Option<usize>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| ModelError::InvalidConfig {
                field: field.into(),
                reason: format!("expected a non-negative integer, found {v}"),
            }),
    }
}

fn optional_bool(map: &BTreeMap<String, Value>, field: &str) -> Result<Option<bool>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| ModelError::InvalidConfig {
                field: field.into(),
                reason: format!("expected true or false, found {v}"),
            }),
    }
}

fn required_string_list(map: &BTreeMap<String, Value>, field: &str) -> Result<Vec<String>> {
    let value = map.get(field).ok_or_else(|| ModelError::MissingConfig {
        reason: format!("field `{field}` is missing"),
    })?;
    let invalid = || ModelError::InvalidConfig {
        field: field.into(),
        reason: format!("expected a list of modality names, found {value}"),
    };
    value
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(invalid))
        .collect()
}

/// Parse one metadata string the way the reference does (YAML `safe_load` after replacing
/// `None` by `null`), for the value shapes found in 4M headers: integers, floats, booleans
/// (`True`/`False`/`true`/`false`), `None`/`null`, quoted or bare strings, and flat or nested
/// `[...]` lists. Like the reference, strings of 10,000 characters or more are kept verbatim.
pub fn parse_metadata_value(text: &str) -> std::result::Result<Value, String> {
    if text.len() >= 10_000 {
        return Ok(Value::String(text.to_owned()));
    }
    let mut parser = LiteralParser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let value = parser.value(true)?;
    parser.skip_spaces();
    if parser.pos != parser.chars.len() {
        return Err(format!(
            "unexpected text after position {} in {text:?}",
            parser.pos
        ));
    }
    Ok(value)
}

struct LiteralParser {
    chars: Vec<char>,
    pos: usize,
}

impl LiteralParser {
    fn skip_spaces(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    /// `top_level`: a bare scalar may then contain commas and brackets (YAML plain scalar).
    fn value(&mut self, top_level: bool) -> std::result::Result<Value, String> {
        self.skip_spaces();
        match self.chars.get(self.pos) {
            None => Ok(Value::Null),
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.chars.get(self.pos) {
                        Some(']') => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        None => return Err("unterminated list".into()),
                        _ => {}
                    }
                    items.push(self.value(false)?);
                    self.skip_spaces();
                    match self.chars.get(self.pos) {
                        Some(',') => self.pos += 1,
                        Some(']') => {}
                        Some(c) => return Err(format!("expected `,` or `]`, found `{c}`")),
                        None => return Err("unterminated list".into()),
                    }
                }
            }
            Some(&quote @ ('\'' | '"')) => {
                self.pos += 1;
                let mut out = String::new();
                loop {
                    match self.chars.get(self.pos) {
                        None => return Err("unterminated string".into()),
                        Some(&c) if c == quote => {
                            // YAML single-quoted strings escape a quote by doubling it.
                            if quote == '\'' && self.chars.get(self.pos + 1) == Some(&'\'') {
                                out.push('\'');
                                self.pos += 2;
                                continue;
                            }
                            self.pos += 1;
                            return Ok(Value::String(out));
                        }
                        Some('\\') if quote == '"' => {
                            let escaped = self
                                .chars
                                .get(self.pos + 1)
                                .copied()
                                .ok_or("unterminated escape")?;
                            out.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                            self.pos += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while let Some(&c) = self.chars.get(self.pos) {
                    if !top_level && (c == ',' || c == ']') {
                        break;
                    }
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                Ok(scalar(word.trim()))
            }
        }
    }
}

fn scalar(word: &str) -> Value {
    match word {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        "None" | "null" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(n) = word.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(x) = word.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(x)
    {
        return Value::Number(n);
    }
    Value::String(word.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_str_values() {
        assert_eq!(parse_metadata_value("768").unwrap(), Value::from(768));
        assert_eq!(parse_metadata_value("4.0").unwrap(), Value::from(4.0));
        assert_eq!(parse_metadata_value("False").unwrap(), Value::Bool(false));
        assert_eq!(parse_metadata_value("True").unwrap(), Value::Bool(true));
        assert_eq!(parse_metadata_value("None").unwrap(), Value::Null);
        assert_eq!(parse_metadata_value("SiLU").unwrap(), Value::from("SiLU"));
        assert_eq!(
            parse_metadata_value("['caption', 'rgb@224', \"tok_rgb@224\"]").unwrap(),
            serde_json::json!(["caption", "rgb@224", "tok_rgb@224"])
        );
        assert_eq!(parse_metadata_value("[]").unwrap(), serde_json::json!([]));
        assert!(parse_metadata_value("['caption'").is_err());
        assert!(parse_metadata_value("['a'] x").is_err());
    }

    #[test]
    fn metadata_config_requires_domains() {
        let mut meta: HashMap<String, String> = [
            ("dim", "32"),
            ("num_heads", "2"),
            ("act_layer", "SiLU"),
            ("norm_bias", "False"),
            ("image_size", "224"),
            ("patch_size", "16"),
            ("domains_out", "['caption']"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let err = ModelConfig::from_metadata(&meta).unwrap_err();
        assert!(err.to_string().contains("domains_in"), "{err}");
        meta.insert("domains_in".into(), "['caption', 'rgb@224']".into());
        let config = ModelConfig::from_metadata(&meta).unwrap();
        assert!(config.share_modality_embeddings, "absent key means shared");
        assert!(config.qkv_bias && !config.gated_mlp);
        assert_eq!(config.domains_in, vec!["caption", "rgb@224"]);
        meta.insert("dim".into(), "abc".into());
        assert!(matches!(
            ModelConfig::from_metadata(&meta),
            Err(ModelError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn swiglu_hidden_width_truncates() {
        let mut meta: HashMap<String, String> = [
            ("dim", "2048"),
            ("num_heads", "32"),
            ("act_layer", "SiLU"),
            ("gated_mlp", "True"),
            ("norm_bias", "False"),
            ("image_size", "224"),
            ("patch_size", "16"),
            ("domains_in", "['caption']"),
            ("domains_out", "['caption']"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            ModelConfig::from_metadata(&meta).unwrap().mlp_hidden_dim(),
            5461
        );
        meta.insert("dim".into(), "768".into());
        meta.insert("num_heads".into(), "12".into());
        assert_eq!(
            ModelConfig::from_metadata(&meta).unwrap().mlp_hidden_dim(),
            2048
        );
    }
}

//! The 4M `metadata` domain: a JSON object of the 21 metadata fields ↔ `v1=<type> v0=<value>` chunks.
//!
//! Binning follows the reference `MetadataTransform`: image dimensions `value // 32` clipped to
//! [0, 999]; integer fields clipped to [0, 999]; `watermark_score` and `aesthetic_score` binned
//! by fixed boundaries; the other floats clipped to [vmin, vmax] and mapped to
//! `int((v − vmin)/(vmax − vmin) · 49)`. Decoding mirrors the reference `decode_metadata`
//! (`× 32` for dimensions, `(vmax − vmin)·(bin / 50) + vmin` for binned floats, note `/50`).
//! The reference shuffles chunk order during training; here chunks come in type-id order.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::TextError;
use crate::layout::TokenKind;
use crate::stream::SkippedTokens;
use crate::tokenizer::TextTokenizer;

/// Largest value a metadata chunk carries (`special_vmax` of the reference).
const VALUE_MAX: f64 = 999.0;
/// Bin size of the image dimensions.
const IMAGE_DIM_BIN: f64 = 32.0;
/// Bins of the min–max binned floats.
const FLOAT_BINS: f64 = 50.0;

/// How a field's value is turned into a bin.
#[derive(Debug, Clone, Copy)]
enum Binning {
    ImageDimension,
    Integer,
    Boundaries(&'static [f64]),
    MinMax { vmin: f64, vmax: f64 },
}

/// The 21 fields in type-id order (the index is the `v1=` value).
const FIELDS: [(&str, Binning); 21] = [
    ("original_width", Binning::ImageDimension),
    ("original_height", Binning::ImageDimension),
    ("caption_n_chars", Binning::Integer),
    ("caption_n_words", Binning::Integer),
    ("caption_n_sentences", Binning::Integer),
    ("n_humans", Binning::Integer),
    ("n_sam_instances", Binning::Integer),
    ("n_coco_instances", Binning::Integer),
    ("coco_instance_diversity", Binning::Integer),
    (
        "colorfulness",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 150.0,
        },
    ),
    (
        "brightness",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 255.0,
        },
    ),
    (
        "contrast",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 127.0,
        },
    ),
    (
        "saturation",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 255.0,
        },
    ),
    (
        "entropy",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 10.0,
        },
    ),
    (
        "walkability",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 1.0,
        },
    ),
    (
        "objectness",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 1.0,
        },
    ),
    ("semantic_diversity", Binning::Integer),
    (
        "geometric_complexity",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 0.75,
        },
    ),
    (
        "occlusion_score",
        Binning::MinMax {
            vmin: 0.0,
            vmax: 0.25,
        },
    ),
    ("watermark_score", Binning::Boundaries(&[0.5])),
    ("aesthetic_score", Binning::Boundaries(&[4.5, 5.5])),
];

/// Names of the 21 metadata fields, in type-id order.
pub fn metadata_field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(name, _)| *name)
}

/// One serialised chunk: `v1=<type_id> v0=<bin>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataChunk {
    /// Field name.
    pub field: &'static str,
    /// The `v1=` value (index in the 4M field list).
    pub type_id: u32,
    /// The `v0=` value.
    pub bin: u32,
}

/// A decoded metadata value: integers stay integers, binned floats come back as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetadataValue {
    /// Dimensions, counts and fixed-boundary bin indices.
    Int(i64),
    /// Bin centres of the min–max binned fields.
    Float(f64),
}

impl Serialize for MetadataValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            MetadataValue::Int(value) => serializer.serialize_i64(value),
            MetadataValue::Float(value) => serializer.serialize_f64(value),
        }
    }
}

/// Metadata recovered from generated ids.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataDecoded {
    /// Field → value, in type-id order (later duplicates win, like the reference's dict).
    pub values: Vec<(&'static str, MetadataValue)>,
    /// Groups that were not a valid `v1=<type> v0=<value>` pair.
    pub skipped: Vec<SkippedTokens>,
}

/// Serialises as `{"values": {field: value, …}, "skipped": [...]}` with fields in type-id order.
impl Serialize for MetadataDecoded {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct OrderedValues<'a>(&'a [(&'static str, MetadataValue)]);
        impl Serialize for OrderedValues<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (field, value) in self.0 {
                    map.serialize_entry(field, value)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("values", &OrderedValues(&self.values))?;
        map.serialize_entry("skipped", &self.skipped)?;
        map.end()
    }
}

/// Bins one field value as the reference does (clipping out-of-range values).
fn bin_value(field: &str, binning: Binning, value: &serde_json::Value) -> Result<u32, TextError> {
    let bad = |problem: &'static str| TextError::MetadataValue {
        key: field.to_owned(),
        value: value.to_string(),
        problem,
    };
    let number = value.as_f64().ok_or_else(|| bad("must be a number"))?;
    if !number.is_finite() {
        return Err(bad("must be a finite number"));
    }
    let bin = match binning {
        Binning::ImageDimension | Binning::Integer => {
            if number.fract() != 0.0 {
                return Err(bad("must be an integer"));
            }
            let scaled = if matches!(binning, Binning::ImageDimension) {
                (number / IMAGE_DIM_BIN).floor()
            } else {
                number
            };
            scaled.clamp(0.0, VALUE_MAX)
        }
        Binning::Boundaries(boundaries) => boundaries
            .iter()
            .take_while(|&&boundary| number >= boundary)
            .count() as f64,
        Binning::MinMax { vmin, vmax } => {
            let unit = (number.clamp(vmin, vmax) - vmin) / (vmax - vmin);
            (unit * (FLOAT_BINS - 1.0)).trunc()
        }
    };
    Ok(bin as u32)
}

/// Parses a JSON object of metadata fields into chunks, in type-id order.
pub fn parse_metadata_json(json: &[u8]) -> Result<Vec<MetadataChunk>, TextError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|error| TextError::input_json(&error))?;
    let mut chunks = Vec::with_capacity(object.len());
    for (key, value) in &object {
        let type_id = FIELDS
            .iter()
            .position(|(name, _)| name == key)
            .ok_or_else(|| TextError::UnknownMetadataKey { key: key.clone() })?;
        let (field, binning) = FIELDS[type_id];
        chunks.push(MetadataChunk {
            field,
            type_id: type_id as u32,
            bin: bin_value(field, binning, value)?,
        });
    }
    chunks.sort_by_key(|chunk| chunk.type_id);
    Ok(chunks)
}

/// The 4M metadata string, e.g. `v1=0 v0=20 v1=16 v0=2`.
pub fn metadata_to_text(chunks: &[MetadataChunk]) -> String {
    chunks
        .iter()
        .map(|chunk| format!("v1={} v0={}", chunk.type_id, chunk.bin))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Token ids of the metadata chunks.
pub fn metadata_to_ids(
    tokenizer: &TextTokenizer,
    chunks: &[MetadataChunk],
) -> Result<Vec<u32>, TextError> {
    let layout = tokenizer.layout();
    let mut ids = Vec::with_capacity(chunks.len() * 2);
    for chunk in chunks {
        ids.push(layout.value_id(1, chunk.type_id)?);
        ids.push(layout.value_id(0, chunk.bin)?);
    }
    Ok(ids)
}

/// Parses a metadata JSON object and serialises it to ids in one step.
pub fn encode_metadata_json(tokenizer: &TextTokenizer, json: &[u8]) -> Result<Vec<u32>, TextError> {
    metadata_to_ids(tokenizer, &parse_metadata_json(json)?)
}

/// Value of `bin` for a field, as the reference's `decode_metadata` computes it.
fn unbin(binning: Binning, bin: u32) -> MetadataValue {
    match binning {
        Binning::ImageDimension => MetadataValue::Int(i64::from(bin) * IMAGE_DIM_BIN as i64),
        Binning::Integer | Binning::Boundaries(_) => MetadataValue::Int(i64::from(bin)),
        Binning::MinMax { vmin, vmax } => {
            MetadataValue::Float((vmax - vmin) * (f64::from(bin) / FLOAT_BINS) + vmin)
        }
    }
}

/// Parses generated metadata ids; invalid groups are skipped and reported.
///
/// A group starts at every `v1=` token (as the reference splits on parts containing `v1`); it is
/// valid when it is exactly `v1=<type> v0=<value>` with a known type. `[EOS]`, `[PAD]`, `[SOS]`
/// and sentinels are structure, not content, and are passed over.
pub fn ids_to_metadata(tokenizer: &TextTokenizer, ids: &[u32]) -> MetadataDecoded {
    let layout = tokenizer.layout();
    let mut by_type: Vec<Option<MetadataValue>> = vec![None; FIELDS.len()];
    let mut skipped = Vec::new();
    // Content tokens of the current group: (position, kind).
    let mut group: Vec<(usize, TokenKind)> = Vec::new();
    let mut finish_group = |group: &mut Vec<(usize, TokenKind)>| {
        let Some(&(start, _)) = group.first() else {
            return;
        };
        let end = group.last().map_or(start, |&(position, _)| position) + 1;
        match group.as_slice() {
            [
                (
                    _,
                    TokenKind::Value {
                        axis: 1,
                        value: type_id,
                    },
                ),
                (
                    _,
                    TokenKind::Value {
                        axis: 0,
                        value: bin,
                    },
                ),
            ] if (*type_id as usize) < FIELDS.len() => {
                by_type[*type_id as usize] = Some(unbin(FIELDS[*type_id as usize].1, *bin));
            }
            [
                (
                    _,
                    TokenKind::Value {
                        axis: 1,
                        value: type_id,
                    },
                ),
                ..,
            ] if (*type_id as usize) >= FIELDS.len() => {
                skipped.push(SkippedTokens::new(
                    start,
                    end,
                    format!("unknown metadata type v1={type_id}"),
                ));
            }
            _ => skipped.push(SkippedTokens::new(
                start,
                end,
                format!(
                    "expected `v1=<type> v0=<value>`, found {} token(s)",
                    group.len()
                ),
            )),
        }
        group.clear();
    };
    for (position, &id) in ids.iter().enumerate() {
        let kind = layout.kind(id);
        match kind {
            TokenKind::Pad | TokenKind::Eos | TokenKind::Sos | TokenKind::Sentinel(_) => {}
            TokenKind::Value { axis: 1, .. } => {
                finish_group(&mut group);
                group.push((position, kind));
            }
            _ => group.push((position, kind)),
        }
    }
    finish_group(&mut group);
    let values = by_type
        .into_iter()
        .enumerate()
        .filter_map(|(type_id, value)| Some((FIELDS[type_id].0, value?)))
        .collect();
    MetadataDecoded { values, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::synthetic_4m_tokenizer;

    #[test]
    fn every_field_bins_and_unbins() {
        let tokenizer = synthetic_4m_tokenizer();
        let json = br#"{"aesthetic_score": 6.0, "occlusion_score": 0.125, "colorfulness": 75,
                        "original_width": 1023, "n_sam_instances": 0}"#;
        let chunks = parse_metadata_json(json).unwrap();
        let text = metadata_to_text(&chunks);
        assert_eq!(
            text,
            "v1=0 v0=31 v1=6 v0=0 v1=9 v0=24 v1=18 v0=24 v1=20 v0=2"
        );
        let ids = metadata_to_ids(&tokenizer, &chunks).unwrap();
        assert_eq!(ids, tokenizer.encode(&text));
        let decoded = ids_to_metadata(&tokenizer, &ids);
        assert_eq!(
            decoded.values,
            vec![
                ("original_width", MetadataValue::Int(992)),
                ("n_sam_instances", MetadataValue::Int(0)),
                ("colorfulness", MetadataValue::Float(150.0 * (24.0 / 50.0))),
                (
                    "occlusion_score",
                    MetadataValue::Float(0.25 * (24.0 / 50.0))
                ),
                ("aesthetic_score", MetadataValue::Int(2)),
            ]
        );
        assert_eq!(metadata_field_names().count(), 21);
    }

    #[test]
    fn duplicate_types_keep_the_last_value() {
        let tokenizer = synthetic_4m_tokenizer();
        let ids = tokenizer.encode("v1=5 v0=1 v1=5 v0=2");
        assert_eq!(
            ids_to_metadata(&tokenizer, &ids).values,
            vec![("n_humans", MetadataValue::Int(2))]
        );
    }
}

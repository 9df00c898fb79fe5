//! The 4M `det` domain: bounding boxes ↔ `v0=… v1=… v2=… v3=… <class>` token groups.
//!
//! Serialisation follows the reference `DetectionTransform(det_threshold=0.6,
//! bbox_order='dist_to_orig', coord_bins=1000)`: keep boxes with score ≥ threshold, sort them
//! (stably) by `xmin² + ymin²`, quantise each coordinate to `round(c · (bins − 1))` with Python's
//! ties-to-even rounding. Parsing generated ids never fails: malformed groups are skipped and
//! reported with their token positions.

use serde::{Deserialize, Serialize};

use crate::error::TextError;
use crate::layout::TokenKind;
use crate::stream::{SkippedTokens, round_half_even};
use crate::tokenizer::TextTokenizer;

/// Score threshold of the reference `DetectionTransform`.
pub const DEFAULT_SCORE_THRESHOLD: f64 = 0.6;

/// One bounding box in normalised image coordinates ([0, 1], origin top-left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionBox {
    /// Class name, one of the vocabulary's class tokens (case-insensitive on input).
    pub label: String,
    /// Left edge.
    pub xmin: f64,
    /// Top edge.
    pub ymin: f64,
    /// Right edge.
    pub xmax: f64,
    /// Bottom edge.
    pub ymax: f64,
    /// Detection confidence in [0, 1]; a box without a score is always kept. Parsed boxes have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Options of the box serialiser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetOptions {
    /// Boxes with a score below this are dropped (reference: `score >= det_threshold` is kept).
    pub score_threshold: f64,
}

impl Default for DetOptions {
    fn default() -> Self {
        DetOptions {
            score_threshold: DEFAULT_SCORE_THRESHOLD,
        }
    }
}

/// Boxes recovered from a generated id stream, with what had to be skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetDecoded {
    /// Complete boxes in stream order; coordinates are `bin / (bins − 1)`.
    pub boxes: Vec<DetectionBox>,
    /// Token runs that did not form a complete box.
    pub skipped: Vec<SkippedTokens>,
}

/// Parses a JSON list of boxes (`[{"label", "xmin", "ymin", "xmax", "ymax", "score"?}, …]`).
pub fn parse_boxes_json(json: &[u8]) -> Result<Vec<DetectionBox>, TextError> {
    serde_json::from_slice(json).map_err(|error| TextError::input_json(&error))
}

/// Checks coordinates, score and label of every box; the first problem is returned.
pub fn validate_boxes(tokenizer: &TextTokenizer, boxes: &[DetectionBox]) -> Result<(), TextError> {
    for (index, candidate) in boxes.iter().enumerate() {
        let coordinates = [
            ("xmin", candidate.xmin),
            ("ymin", candidate.ymin),
            ("xmax", candidate.xmax),
            ("ymax", candidate.ymax),
        ];
        for (field, value) in coordinates {
            if !(0.0..=1.0).contains(&value) {
                return Err(TextError::BoxCoordinate {
                    index,
                    field,
                    value,
                });
            }
        }
        for (min_field, min, max_field, max) in [
            ("xmin", candidate.xmin, "xmax", candidate.xmax),
            ("ymin", candidate.ymin, "ymax", candidate.ymax),
        ] {
            if min > max {
                return Err(TextError::BoxInverted {
                    index,
                    min_field,
                    min,
                    max_field,
                    max,
                });
            }
        }
        if let Some(score) = candidate.score
            && !(0.0..=1.0).contains(&score)
        {
            return Err(TextError::BoxScore {
                index,
                value: score,
            });
        }
        if tokenizer.layout().class_id(&candidate.label).is_none() {
            return Err(TextError::UnknownClass {
                index,
                label: candidate.label.clone(),
            });
        }
    }
    Ok(())
}

/// A validated, kept box reduced to what is serialised.
struct QuantisedBox {
    bins: [u32; 4],
    class_id: u32,
}

fn quantise(
    tokenizer: &TextTokenizer,
    boxes: &[DetectionBox],
    options: DetOptions,
) -> Result<Vec<QuantisedBox>, TextError> {
    validate_boxes(tokenizer, boxes)?;
    let layout = tokenizer.layout();
    let top = (layout.value_bins() - 1) as f64;
    let mut kept: Vec<&DetectionBox> = boxes
        .iter()
        .filter(|candidate| {
            candidate
                .score
                .is_none_or(|score| score >= options.score_threshold)
        })
        .collect();
    // Stable, like Python's `sorted`, so equal distances keep their input order.
    kept.sort_by(|a, b| {
        let distance = |item: &DetectionBox| item.xmin * item.xmin + item.ymin * item.ymin;
        distance(a).total_cmp(&distance(b))
    });
    Ok(kept
        .into_iter()
        .map(|item| QuantisedBox {
            bins: [item.xmin, item.ymin, item.xmax, item.ymax]
                .map(|coordinate| round_half_even(coordinate * top) as u32),
            class_id: layout.class_id(&item.label).expect("validated label"),
        })
        .collect())
}

/// The 4M det string, e.g. `v0=0 v1=250 v2=420 v3=999 potted plant v0=…`.
pub fn det_to_text(
    tokenizer: &TextTokenizer,
    boxes: &[DetectionBox],
    options: DetOptions,
) -> Result<String, TextError> {
    let groups = quantise(tokenizer, boxes, options)?;
    let mut text = String::new();
    for group in groups {
        for (axis, bin) in group.bins.iter().enumerate() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("v{axis}={bin}"));
        }
        text.push(' ');
        text.push_str(
            tokenizer
                .id_to_token(group.class_id)
                .expect("class token exists"),
        );
    }
    Ok(text)
}

/// Token ids of the det string (equal to encoding [`det_to_text`], without the text detour).
pub fn det_to_ids(
    tokenizer: &TextTokenizer,
    boxes: &[DetectionBox],
    options: DetOptions,
) -> Result<Vec<u32>, TextError> {
    let layout = tokenizer.layout();
    let mut ids = Vec::new();
    for group in quantise(tokenizer, boxes, options)? {
        for (axis, &bin) in group.bins.iter().enumerate() {
            ids.push(layout.value_id(axis as u8, bin)?);
        }
        ids.push(group.class_id);
    }
    Ok(ids)
}

/// Parses a JSON box list and serialises it to ids in one step (what the `det` plugin's
/// `tokenize` does).
pub fn encode_boxes_json(
    tokenizer: &TextTokenizer,
    json: &[u8],
    options: DetOptions,
) -> Result<Vec<u32>, TextError> {
    det_to_ids(tokenizer, &parse_boxes_json(json)?, options)
}

/// Appends a skip, merging it with the previous one when contiguous with the same reason.
fn record_skip(skipped: &mut Vec<SkippedTokens>, start: usize, end: usize, reason: String) {
    if let Some(last) = skipped.last_mut()
        && last.end == start
        && last.reason == reason
    {
        last.end = end;
        return;
    }
    skipped.push(SkippedTokens::new(start, end, reason));
}

/// Box under construction while parsing.
struct PartialBox {
    start: usize,
    bins: [u32; 4],
    filled: usize,
}

/// Parses generated det ids back into boxes.
///
/// Grammar: `(v0 v1 v2 v3 <class>)*`. `[PAD]` is ignored, a sentinel or `[SOS]` closes any
/// unfinished box, `[EOS]` ends the stream (anything after it is reported). Everything that does
/// not complete a box is reported in [`DetDecoded::skipped`]; nothing makes this fail.
pub fn ids_to_det(tokenizer: &TextTokenizer, ids: &[u32]) -> DetDecoded {
    let layout = tokenizer.layout();
    let top = (layout.value_bins() - 1) as f64;
    let mut boxes = Vec::new();
    let mut skipped = Vec::new();
    let mut partial: Option<PartialBox> = None;
    let drop_partial = |partial: &mut Option<PartialBox>,
                        skipped: &mut Vec<SkippedTokens>,
                        end: usize,
                        why: &str| {
        if let Some(unfinished) = partial.take() {
            record_skip(
                skipped,
                unfinished.start,
                end,
                format!(
                    "incomplete box ({} of 4 coordinates, no label): {why}",
                    unfinished.filled
                ),
            );
        }
    };
    for (position, &id) in ids.iter().enumerate() {
        match layout.kind(id) {
            TokenKind::Pad => {}
            TokenKind::Eos => {
                drop_partial(
                    &mut partial,
                    &mut skipped,
                    position,
                    "stream ended by [EOS]",
                );
                if position + 1 < ids.len() {
                    record_skip(
                        &mut skipped,
                        position + 1,
                        ids.len(),
                        "tokens after [EOS]".into(),
                    );
                }
                return DetDecoded { boxes, skipped };
            }
            TokenKind::Sentinel(_) | TokenKind::Sos => {
                drop_partial(
                    &mut partial,
                    &mut skipped,
                    position,
                    "interrupted by a sentinel",
                );
            }
            TokenKind::Value { axis: 0, value } => {
                drop_partial(&mut partial, &mut skipped, position, "a new box started");
                partial = Some(PartialBox {
                    start: position,
                    bins: [value, 0, 0, 0],
                    filled: 1,
                });
            }
            TokenKind::Value { axis, value } => match &mut partial {
                Some(building) if building.filled == axis as usize => {
                    building.bins[building.filled] = value;
                    building.filled += 1;
                }
                Some(building) => {
                    let expected = building.filled;
                    let start = building.start;
                    partial = None;
                    record_skip(
                        &mut skipped,
                        start,
                        position + 1,
                        format!("coordinates out of order: expected v{expected}=, found v{axis}="),
                    );
                }
                None => record_skip(
                    &mut skipped,
                    position,
                    position + 1,
                    format!("v{axis}= outside a box"),
                ),
            },
            TokenKind::Class(class_index) => match partial.take() {
                Some(building) if building.filled == 4 => {
                    let [xmin, ymin, xmax, ymax] = building.bins.map(|bin| f64::from(bin) / top);
                    boxes.push(DetectionBox {
                        label: layout
                            .class_name(class_index)
                            .unwrap_or_default()
                            .to_owned(),
                        xmin,
                        ymin,
                        xmax,
                        ymax,
                        score: None,
                    });
                }
                Some(building) => record_skip(
                    &mut skipped,
                    building.start,
                    position + 1,
                    format!("label after only {} of 4 coordinates", building.filled),
                ),
                None => record_skip(
                    &mut skipped,
                    position,
                    position + 1,
                    "class label without coordinates".into(),
                ),
            },
            TokenKind::Unk | TokenKind::Word | TokenKind::OtherSpecial | TokenKind::Unused => {
                drop_partial(
                    &mut partial,
                    &mut skipped,
                    position,
                    "followed by a non-box token",
                );
                let token = tokenizer.id_to_token(id).unwrap_or("<unknown id>");
                record_skip(
                    &mut skipped,
                    position,
                    position + 1,
                    format!("unexpected token {token:?} (id {id})"),
                );
            }
        }
    }
    drop_partial(&mut partial, &mut skipped, ids.len(), "stream ended");
    DetDecoded { boxes, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::synthetic_4m_tokenizer;

    fn boxed(
        label: &str,
        xmin: f64,
        ymin: f64,
        xmax: f64,
        ymax: f64,
        score: Option<f64>,
    ) -> DetectionBox {
        DetectionBox {
            label: label.into(),
            xmin,
            ymin,
            xmax,
            ymax,
            score,
        }
    }

    #[test]
    fn filters_orders_rounds_and_encodes() {
        let tokenizer = synthetic_4m_tokenizer();
        let boxes = [
            boxed("DOG", 0.5, 0.5, 1.0, 1.0, None),
            boxed("cat", 0.5, 0.5, 0.6, 0.6, Some(0.7)), // same distance: stays after the dog
            boxed("potted plant", 0.0, 0.1, 0.2, 0.3, Some(0.9)),
            boxed("cat", 0.0, 0.0, 0.1, 0.1, Some(0.2)),
        ];
        let text = det_to_text(&tokenizer, &boxes, DetOptions::default()).unwrap();
        // 0.5 · 999 = 499.5 rounds to the even 500, as Python's round does.
        assert_eq!(
            text,
            "v0=0 v1=100 v2=200 v3=300 potted plant v0=500 v1=500 v2=999 v3=999 dog \
             v0=500 v1=500 v2=599 v3=599 cat"
        );
        let ids = det_to_ids(&tokenizer, &boxes, DetOptions::default()).unwrap();
        assert_eq!(ids, tokenizer.encode(&text));
        let decoded = ids_to_det(&tokenizer, &ids);
        assert_eq!(decoded.boxes.len(), 3);
        assert!(decoded.skipped.is_empty());
        assert_eq!(decoded.boxes[1].label, "dog");
        assert_eq!(decoded.boxes[1].xmax, 1.0);
    }

    #[test]
    fn threshold_is_configurable() {
        let tokenizer = synthetic_4m_tokenizer();
        let boxes = [boxed("cat", 0.1, 0.1, 0.2, 0.2, Some(0.3))];
        assert!(
            det_to_ids(&tokenizer, &boxes, DetOptions::default())
                .unwrap()
                .is_empty()
        );
        let loose = DetOptions {
            score_threshold: 0.25,
        };
        assert_eq!(det_to_ids(&tokenizer, &boxes, loose).unwrap().len(), 5);
    }

    #[test]
    fn truncated_stream_reports_the_unfinished_box() {
        let tokenizer = synthetic_4m_tokenizer();
        let ids = tokenizer.encode("v0=1 v1=2 v2=3 v3=4 cat v0=5 v1=6");
        let decoded = ids_to_det(&tokenizer, &ids);
        assert_eq!(decoded.boxes.len(), 1);
        assert_eq!(
            decoded.skipped,
            vec![SkippedTokens::new(
                5,
                7,
                "incomplete box (2 of 4 coordinates, no label): stream ended"
            )]
        );
    }
}

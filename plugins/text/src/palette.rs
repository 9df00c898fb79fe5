//! The 4M `color_palette` domain: 1–7 RGB colours ↔ `v1=<k>` followed by `3k` `v0=<channel>`
//! tokens (reference `ColorPaletteTransform`), plus a PNG swatch of a palette.

use serde::{Deserialize, Serialize};

use crate::error::TextError;
use crate::layout::TokenKind;
use crate::stream::{SkippedTokens, round_half_even};
use crate::tokenizer::TextTokenizer;

/// Most colours a 4M palette has (`v1=1` … `v1=7`; 23 tokens with sentinel and `[EOS]`).
pub const MAX_PALETTE_COLOURS: usize = 7;

/// An 8-bit RGB colour, serialised as `[r, g, b]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rgb(pub [u8; 3]);

impl Rgb {
    /// `#rrggbb`.
    pub fn to_hex(self) -> String {
        let [r, g, b] = self.0;
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

/// A palette recovered from generated ids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaletteDecoded {
    /// Complete colours in stream order.
    pub colours: Vec<Rgb>,
    /// The `k` of the leading `v1=k`, if there was a valid one.
    pub declared_count: Option<u32>,
    /// Tokens that did not form a colour, and count mismatches (as an empty range at the end).
    pub skipped: Vec<SkippedTokens>,
}

const CHANNELS: [&str; 3] = ["r", "g", "b"];

/// Parses a JSON list of 1–7 colours, each `[r, g, b]` (numbers 0–255, rounded half to even as
/// the reference's `round`) or `"#rrggbb"`.
pub fn parse_palette_json(json: &[u8]) -> Result<Vec<Rgb>, TextError> {
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(json).map_err(|error| TextError::input_json(&error))?;
    let colours = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_colour(index, item))
        .collect::<Result<Vec<_>, _>>()?;
    check_palette_size(colours.len())?;
    Ok(colours)
}

fn check_palette_size(count: usize) -> Result<(), TextError> {
    if count == 0 || count > MAX_PALETTE_COLOURS {
        return Err(TextError::PaletteSize {
            count,
            max: MAX_PALETTE_COLOURS,
        });
    }
    Ok(())
}

fn parse_colour(index: usize, item: &serde_json::Value) -> Result<Rgb, TextError> {
    let problem = |problem: String| TextError::PaletteColour { index, problem };
    match item {
        serde_json::Value::String(hex) => {
            let digits = hex
                .strip_prefix('#')
                .filter(|digits| digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| problem(format!("{hex:?} is not a #rrggbb colour")))?;
            let channel =
                |at: usize| u8::from_str_radix(&digits[at..at + 2], 16).expect("hex digits");
            Ok(Rgb([channel(0), channel(2), channel(4)]))
        }
        serde_json::Value::Array(channels) if channels.len() == 3 => {
            let mut rgb = [0u8; 3];
            for (slot, (value, channel)) in channels.iter().zip(CHANNELS).enumerate() {
                let number = value.as_f64().ok_or_else(|| {
                    problem(format!("channel {channel} is {value}, not a number"))
                })?;
                if !(0.0..=255.0).contains(&number) {
                    return Err(TextError::PaletteChannel {
                        index,
                        channel,
                        value: number,
                    });
                }
                rgb[slot] = round_half_even(number) as u8;
            }
            Ok(Rgb(rgb))
        }
        other => Err(problem(format!(
            "expected [r, g, b] or \"#rrggbb\", found {other}"
        ))),
    }
}

/// The 4M palette string, e.g. `v1=2 v0=255 v0=0 v0=0 v0=12 v0=200 v0=34`.
pub fn palette_to_text(colours: &[Rgb]) -> Result<String, TextError> {
    check_palette_size(colours.len())?;
    let mut text = format!("v1={}", colours.len());
    for channel in colours.iter().flat_map(|colour| colour.0) {
        text.push_str(&format!(" v0={channel}"));
    }
    Ok(text)
}

/// Token ids of the palette string.
pub fn palette_to_ids(tokenizer: &TextTokenizer, colours: &[Rgb]) -> Result<Vec<u32>, TextError> {
    check_palette_size(colours.len())?;
    let layout = tokenizer.layout();
    let mut ids = Vec::with_capacity(1 + 3 * colours.len());
    ids.push(layout.value_id(1, colours.len() as u32)?);
    for channel in colours.iter().flat_map(|colour| colour.0) {
        ids.push(layout.value_id(0, u32::from(channel))?);
    }
    Ok(ids)
}

/// Parses a palette JSON list and serialises it to ids in one step.
pub fn encode_palette_json(tokenizer: &TextTokenizer, json: &[u8]) -> Result<Vec<u32>, TextError> {
    palette_to_ids(tokenizer, &parse_palette_json(json)?)
}

/// Parses generated palette ids; never fails.
///
/// The first content token should be `v1=k` (1 ≤ k ≤ 7); then `v0=` channels are grouped in
/// threes. `[PAD]`, `[SOS]` and sentinels are passed over, `[EOS]` ends the stream. Channels above
/// 255, extra colours beyond `k`, stray tokens and an unfinished colour are reported as skipped.
pub fn ids_to_palette(tokenizer: &TextTokenizer, ids: &[u32]) -> PaletteDecoded {
    let layout = tokenizer.layout();
    let mut colours = Vec::new();
    let mut declared_count = None;
    let mut skipped = Vec::new();
    let mut pending: Vec<u8> = Vec::with_capacity(3);
    let mut pending_start = 0;
    let mut seen_content = false;
    let mut end = ids.len();
    for (position, &id) in ids.iter().enumerate() {
        match layout.kind(id) {
            TokenKind::Pad | TokenKind::Sos | TokenKind::Sentinel(_) => continue,
            TokenKind::Eos => {
                if position + 1 < ids.len() {
                    skipped.push(SkippedTokens::new(
                        position + 1,
                        ids.len(),
                        "tokens after [EOS]",
                    ));
                }
                end = position;
                break;
            }
            TokenKind::Value { axis: 1, value } if !seen_content => {
                if (1..=MAX_PALETTE_COLOURS as u32).contains(&value) {
                    declared_count = Some(value);
                } else {
                    skipped.push(SkippedTokens::new(
                        position,
                        position + 1,
                        format!("palette size v1={value} is not in 1..={MAX_PALETTE_COLOURS}"),
                    ));
                }
            }
            TokenKind::Value { axis: 0, value } => {
                let full = declared_count.is_some_and(|count| colours.len() >= count as usize);
                if full {
                    skipped.push(SkippedTokens::new(
                        position,
                        position + 1,
                        "channel beyond the declared colours",
                    ));
                } else if value > 255 {
                    let start = if pending.is_empty() {
                        position
                    } else {
                        pending_start
                    };
                    pending.clear();
                    skipped.push(SkippedTokens::new(
                        start,
                        position + 1,
                        format!("channel v0={value} is above 255"),
                    ));
                } else {
                    if pending.is_empty() {
                        pending_start = position;
                    }
                    pending.push(value as u8);
                    if pending.len() == 3 {
                        colours.push(Rgb([pending[0], pending[1], pending[2]]));
                        pending.clear();
                    }
                }
            }
            _ => {
                let token = tokenizer.id_to_token(id).unwrap_or("<unknown id>");
                skipped.push(SkippedTokens::new(
                    position,
                    position + 1,
                    format!("unexpected token {token:?} (id {id}) in a palette"),
                ));
            }
        }
        seen_content = true;
    }
    if !pending.is_empty() {
        skipped.push(SkippedTokens::new(
            pending_start,
            end,
            format!("unfinished colour ({} of 3 channels)", pending.len()),
        ));
    }
    if let Some(count) = declared_count
        && colours.len() != count as usize
    {
        skipped.push(SkippedTokens::new(
            end,
            end,
            format!("declared {count} colours, found {}", colours.len()),
        ));
    }
    PaletteDecoded {
        colours,
        declared_count,
        skipped,
    }
}

/// A PNG of the palette: one `cell`×`cell` square per colour, left to right (the reference's
/// `visualize_palettes_multi` uses 25-pixel squares). An empty palette gives a 1×1 black image.
pub fn palette_swatch_png(colours: &[Rgb], cell: u32) -> Vec<u8> {
    let cell = cell.clamp(1, 512) as usize;
    if colours.is_empty() {
        return crate::png::encode_rgb(1, 1, &[0, 0, 0]);
    }
    let width = cell * colours.len();
    let mut row = Vec::with_capacity(width * 3);
    for colour in colours {
        for _ in 0..cell {
            row.extend_from_slice(&colour.0);
        }
    }
    let pixels = row.repeat(cell);
    crate::png::encode_rgb(width as u32, cell as u32, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::synthetic_4m_tokenizer;

    #[test]
    fn one_colour_round_trips_and_hex_formats() {
        let tokenizer = synthetic_4m_tokenizer();
        let colours = parse_palette_json(br##"["#FF8000"]"##).unwrap();
        assert_eq!(colours, vec![Rgb([255, 128, 0])]);
        assert_eq!(colours[0].to_hex(), "#ff8000");
        let ids = palette_to_ids(&tokenizer, &colours).unwrap();
        assert_eq!(ids, tokenizer.encode(&palette_to_text(&colours).unwrap()));
        let decoded = ids_to_palette(&tokenizer, &ids);
        assert_eq!(
            (decoded.colours, decoded.declared_count),
            (colours, Some(1))
        );
    }

    #[test]
    fn short_stream_reports_missing_colours() {
        let tokenizer = synthetic_4m_tokenizer();
        let ids = tokenizer.encode("v1=3 v0=1 v0=2 v0=3 v0=4");
        let decoded = ids_to_palette(&tokenizer, &ids);
        assert_eq!(decoded.colours, vec![Rgb([1, 2, 3])]);
        let reasons: Vec<&str> = decoded.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "unfinished colour (1 of 3 channels)",
                "declared 3 colours, found 1"
            ]
        );
    }

    #[test]
    fn channel_rounding_is_ties_to_even() {
        let colours = parse_palette_json(b"[[0.5, 1.5, 254.5]]").unwrap();
        assert_eq!(colours, vec![Rgb([0, 2, 254])]);
    }
}

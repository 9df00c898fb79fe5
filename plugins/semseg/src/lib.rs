//! The `semseg` plugin: semantic segmentation maps <-> 4M `tok_semseg@224` token grids.
//!
//! Tokenize: read a PNG label map (indexed or grey: the samples are the class ids; RGB: each
//! colour is looked up in the configured class colours), crop its centre square, resize it with
//! nearest-neighbour sampling (ids are never blended), add `id_shift` modulo 256 as the reference
//! does for COCO (so its "ignore" id 255 becomes class 0), and run `tok_semseg@224/encode` on the
//! ids. Detokenize: run `tok_semseg@224/decode`, take the arg-max class per pixel, undo the shift,
//! and return the map as a palette PNG (`segmentation`) and a JSON legend (`legend`: every class
//! with its id, name, colour and pixel count).

use tessera_image_plugin::{GraphDomain, Settings, encoding_failed, invalid_image};
use tessera_imaging as image;
use tessera_sdk::prelude::*;

/// The released 4k semseg tokenizer's vocabulary, 14 x 14 tokens at 224 pixels.
pub const GRAPHS: GraphDomain = GraphDomain {
    plugin: "semseg",
    domain: "tok_semseg@224",
    vocab_size: 4096,
    tokens: 196,
};

/// The plugin's own config keys, beside the shared image settings.
const CLASS_KEYS: [&str; 3] = ["classes", "colours", "id_shift"];

/// The class list: names and colours in id order, and the shift between file ids and tokenizer
/// classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    pub names: Vec<String>,
    pub colours: Vec<[u8; 3]>,
    pub id_shift: u8,
}

impl Classes {
    /// Reads `classes`, `colours` and `id_shift` from the config.
    pub fn from_config(config: &Params) -> Result<Self, PluginError> {
        let names: Vec<String> = config
            .get("classes")
            .unwrap_or_default()
            .split(',')
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return Err(PluginError::invalid(
                "config `classes` lists no classes (comma-separated names in id order)",
            ));
        }
        let colours = config
            .get("colours")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .enumerate()
            .map(|(i, text)| {
                parse_colour(text).ok_or_else(|| {
                    PluginError::invalid(format!(
                        "config `colours` entry {i} is `{text}`: expected #rrggbb"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if colours.len() != names.len() {
            return Err(PluginError::invalid(format!(
                "config `colours` has {} colours for {} classes",
                colours.len(),
                names.len()
            )));
        }
        let id_shift: u8 = config.parse_or("id_shift", 0)?;
        if names.len() + usize::from(id_shift) > 256 {
            return Err(PluginError::invalid(format!(
                "{} classes with `id_shift` {id_shift} do not fit 8-bit ids",
                names.len()
            )));
        }
        Ok(Classes {
            names,
            colours,
            id_shift,
        })
    }

    /// Classes the tokenizer distinguishes: the listed ones plus the shifted-in ones.
    pub fn tokenizer_labels(&self) -> u32 {
        self.names.len() as u32 + u32::from(self.id_shift)
    }

    /// File ids to tokenizer classes: `(id + shift) mod 256`, refused when not a class.
    pub fn to_tokenizer(&self, labels: &image::LabelImage) -> Result<Vec<u8>, PluginError> {
        let n = self.tokenizer_labels();
        labels
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let class = id.wrapping_add(self.id_shift);
                if u32::from(class) < n {
                    Ok(class)
                } else {
                    Err(PluginError::invalid(format!(
                        "pixel ({}, {}) of the resized map has id {id}, but there are {} classes ({})",
                        i as u32 % labels.width,
                        i as u32 / labels.width,
                        self.names.len(),
                        self.names.join(", ")
                    )))
                }
            })
            .collect()
    }
}

fn parse_colour(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#')?;
    if hex.len() != 6 || !hex.is_ascii() {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

/// The tokenizer input: the decoded map, centre square, nearest-neighbour resize to `size`.
pub fn label_tokenizer_input(
    bytes: &[u8],
    classes: &Classes,
    size: u32,
) -> Result<Vec<u8>, PluginError> {
    let decoded = image::decode_labels(bytes, &classes.colours).map_err(invalid_image)?;
    let square = image::centre_square_labels(&decoded);
    let resized = if square.width == size {
        square
    } else {
        image::resize_labels(&square, size, size)
    };
    classes.to_tokenizer(&resized)
}

/// Arg-max over the class logits `(classes, height, width)` per pixel (the first on ties, NaN
/// never wins), then the shift undone; returns the map and how many pixels had no finite logit.
pub fn argmax_labels(
    logits: &[f32],
    classes: u32,
    width: u32,
    height: u32,
    id_shift: u8,
) -> (image::LabelImage, usize) {
    let plane = width as usize * height as usize;
    let mut non_finite = 0;
    let ids = (0..plane)
        .map(|p| {
            let mut best: Option<(usize, f32)> = None;
            for c in 0..classes as usize {
                let v = logits[c * plane + p];
                if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
                    best = Some((c, v));
                }
            }
            let class = best.map_or_else(
                || {
                    non_finite += 1;
                    0
                },
                |(c, _)| c,
            );
            (class as u8).wrapping_sub(id_shift)
        })
        .collect();
    (image::LabelImage { width, height, ids }, non_finite)
}

/// The legend: every class with its file id, name, colour and pixel count in `labels`.
pub fn legend(classes: &Classes, labels: &image::LabelImage) -> serde_json::Value {
    let mut counts = vec![0u64; 256];
    for &id in &labels.ids {
        counts[usize::from(id)] += 1;
    }
    let entries: Vec<serde_json::Value> = classes
        .names
        .iter()
        .zip(&classes.colours)
        .enumerate()
        .map(|(id, (name, [r, g, b]))| {
            serde_json::json!({
                "id": id,
                "name": name,
                "colour": format!("#{r:02x}{g:02x}{b:02x}"),
                "pixels": counts[id],
            })
        })
        .collect();
    let other: u64 = counts[classes.names.len()..].iter().sum();
    serde_json::json!({
        "width": labels.width,
        "height": labels.height,
        "classes": entries,
        "unlisted_pixels": other,
    })
}

pub struct Semseg {
    settings: Settings,
    classes: Classes,
}

impl ModalityPlugin for Semseg {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "semseg",
            env!("CARGO_PKG_VERSION"),
            "Semantic segmentation (PNG of class ids) <-> 4M tok_semseg@224 token grids (tokenizer in the host)",
        )
        .with_modality(GRAPHS.modality())
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        Ok(Semseg {
            settings: Settings::from_config(&config, &CLASS_KEYS)?,
            classes: Classes::from_config(&config)?,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        GRAPHS.check_domain(domain)?;
        let size = self.settings.tokenize_size(params)?;
        let ids = label_tokenizer_input(input.as_image()?, &self.classes, size)?;
        GRAPHS.encode(Tensor {
            dtype: Dtype::U8,
            shape: vec![1, size, size],
            data: ids,
        })
    }

    fn detokenize(&mut self, tokens: Tokens, params: &Params) -> Result<Detokenized, PluginError> {
        let diffusion = self.settings.detokenize_diffusion(params)?;
        let labels = self.classes.tokenizer_labels();
        let planes = GRAPHS
            .decode(&tokens, diffusion, "logits", labels)
            .map_err(|e| match e {
                PluginError::Other(message) if message.contains("channels") => {
                    PluginError::Other(format!(
                        "{message}: the plugin's config lists {} classes with id_shift {}; \
                         set `classes` to the tokenizer's",
                        self.classes.names.len(),
                        self.classes.id_shift
                    ))
                }
                other => other,
            })?;
        let (map, non_finite) = argmax_labels(
            &planes.values,
            labels,
            planes.width,
            planes.height,
            self.classes.id_shift,
        );
        let png =
            image::encode_png_indexed(&map, &self.classes.colours).map_err(encoding_failed)?;
        let legend = legend(&self.classes, &map);
        let mut out = Detokenized::single("segmentation", Value::png(png))
            .with("legend", Value::Json(legend.to_string()));
        if non_finite > 0 {
            out = out.warn(format!(
                "{non_finite} pixels had no finite class logit and were written as class 0"
            ));
        }
        Ok(out)
    }
}

tessera_sdk::export_plugin!(Semseg);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Params {
        Params::from(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn world_classes() -> Classes {
        Classes::from_config(&config(&[
            ("classes", "floor, wall,sphere"),
            ("colours", "#aa9678,#96aac8,#e63c3c"),
        ]))
        .unwrap()
    }

    #[test]
    fn class_config_is_read_and_checked() {
        let classes = world_classes();
        assert_eq!(classes.names, ["floor", "wall", "sphere"]);
        assert_eq!(classes.colours[2], [230, 60, 60]);
        assert_eq!(classes.tokenizer_labels(), 3);
        for (pairs, expected) in [
            (vec![("classes", " , ")], "lists no classes"),
            (
                vec![("classes", "a,b"), ("colours", "#000000")],
                "1 colours for 2 classes",
            ),
            (
                vec![("classes", "a"), ("colours", "red")],
                "entry 0 is `red`",
            ),
            (
                vec![
                    ("classes", "a"),
                    ("colours", "#000000"),
                    ("id_shift", "256"),
                ],
                "id_shift",
            ),
        ] {
            let err = Classes::from_config(&config(&pairs)).unwrap_err();
            assert!(
                err.describe().contains(expected),
                "{pairs:?}: {}",
                err.describe()
            );
        }
    }

    #[test]
    fn ids_are_shifted_like_the_reference_and_checked() {
        let mut classes = world_classes();
        let labels = image::LabelImage {
            width: 2,
            height: 2,
            ids: vec![0, 1, 2, 1],
        };
        assert_eq!(classes.to_tokenizer(&labels).unwrap(), vec![0, 1, 2, 1]);
        classes.id_shift = 1;
        let ignore = image::LabelImage {
            width: 2,
            height: 1,
            ids: vec![255, 2],
        };
        // 255 ("ignore") wraps to class 0, as the reference's uint8 + 1 does.
        assert_eq!(classes.to_tokenizer(&ignore).unwrap(), vec![0, 3]);
        classes.id_shift = 0;
        let err = classes.to_tokenizer(&ignore).unwrap_err();
        assert!(
            err.describe()
                .contains("pixel (0, 0) of the resized map has id 255"),
            "{}",
            err.describe()
        );
    }

    #[test]
    fn colour_maps_are_read_through_the_class_colours() {
        let classes = world_classes();
        let data = [170, 150, 120, 230, 60, 60, 150, 170, 200, 230, 60, 60];
        let png = image::encode_png(&image::RgbImage {
            width: 2,
            height: 2,
            data: data.to_vec(),
        })
        .unwrap();
        assert_eq!(
            label_tokenizer_input(&png, &classes, 2).unwrap(),
            vec![0, 2, 1, 2]
        );
        let upscaled = label_tokenizer_input(&png, &classes, 4).unwrap();
        assert_eq!(upscaled[..4], [0, 0, 2, 2]);
    }

    #[test]
    fn argmax_takes_the_best_finite_class_and_undoes_the_shift() {
        // Two classes (+1 shifted), three pixels: class 1, class 2, no finite logit.
        let logits = [
            0.0,
            0.0,
            f32::NAN, // class 0 ("ignore")
            5.0,
            1.0,
            f32::NAN, // class 1
            2.0,
            3.0,
            f32::NAN, // class 2
        ];
        let (map, non_finite) = argmax_labels(&logits, 3, 3, 1, 1);
        assert_eq!(map.ids, vec![0, 1, 255]);
        assert_eq!(non_finite, 1);
        let legend = legend(&world_classes(), &map);
        assert_eq!(legend["classes"][1]["pixels"], 1);
        assert_eq!(legend["unlisted_pixels"], 1);
    }
}

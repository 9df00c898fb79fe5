//! The shapes world as a token dataset for the sequence domains (`caption`, `det`, `metadata`,
//! `color_palette`), serialised with the text plugins' own code (`tessera-text`) and vocabulary,
//! so training sees exactly the ids the plugins produce at inference; image-token domains come from
//! trained tokenizers ([`crate::image_tokens`]).

use tessera_text::{DetOptions, DetectionBox, Rgb, TextTokenizer};
use tessera_world::SceneModalities;

use crate::data::{DomainTokens, InMemoryDataset, TokenSample};
use crate::error::{Result, TrainError};
use crate::image_tokens::ImageTokenizers;

/// Scenes generated and encoded together when building a dataset: enough to amortise the image
/// tokenizers' per-pass overhead, few enough to report progress often.
const SCENES_PER_CHUNK: usize = 32;

/// The domains [`world_sample`] provides.
pub const WORLD_SEQUENCE_DOMAINS: [&str; 4] = ["caption", "det", "metadata", "color_palette"];

fn text_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Text(e.to_string())
}

/// The sequence domains of one scene.
pub fn world_sample(tokenizer: &TextTokenizer, scene: &SceneModalities) -> Result<TokenSample> {
    let mut sample = TokenSample::new();
    sample.insert(
        "caption".into(),
        DomainTokens::Sequence(tokenizer.encode(&scene.caption)),
    );
    // The det plugin's input: normalised boxes with their class names, no scores (always kept).
    let boxes: Vec<DetectionBox> = scene
        .boxes
        .iter()
        .map(|b| DetectionBox {
            label: b.label.clone(),
            xmin: b.normalized_box[0],
            ymin: b.normalized_box[1],
            xmax: b.normalized_box[2],
            ymax: b.normalized_box[3],
            score: None,
        })
        .collect();
    sample.insert(
        "det".into(),
        DomainTokens::Sequence(
            tessera_text::det::det_to_ids(tokenizer, &boxes, DetOptions::default())
                .map_err(text_error)?,
        ),
    );
    // Metadata goes through the plugin's JSON parser (its binning), then is masked per chunk.
    let json = serde_json::to_vec(&scene.metadata).expect("metadata serialises");
    let chunks = tessera_text::metadata::parse_metadata_json(&json).map_err(text_error)?;
    let chunk_ids = chunks
        .iter()
        .map(|chunk| {
            tessera_text::metadata::metadata_to_ids(tokenizer, std::slice::from_ref(chunk))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(text_error)?;
    sample.insert("metadata".into(), DomainTokens::Chunks(chunk_ids));
    let colours: Vec<Rgb> = scene.palette.iter().map(|c| Rgb(c.rgb)).collect();
    sample.insert(
        "color_palette".into(),
        DomainTokens::Sequence(
            tessera_text::palette::palette_to_ids(tokenizer, &colours).map_err(text_error)?,
        ),
    );
    Ok(sample)
}

/// Render scenes `first_seed..first_seed + count` and tokenise their sequence domains.
pub fn world_dataset(
    tokenizer: &TextTokenizer,
    first_seed: u64,
    count: usize,
) -> Result<InMemoryDataset> {
    world_dataset_with_images(tokenizer, first_seed, count, None, &mut |_| {})
}

/// [`world_dataset`], plus the token grids of the image domains `images` has tokenizers for;
/// `progress` hears the number of samples made so far after every chunk of scenes.
pub fn world_dataset_with_images(
    tokenizer: &TextTokenizer,
    first_seed: u64,
    count: usize,
    images: Option<&ImageTokenizers>,
    progress: &mut dyn FnMut(usize),
) -> Result<InMemoryDataset> {
    let mut samples = Vec::with_capacity(count);
    while samples.len() < count {
        let start = samples.len();
        let end = (start + SCENES_PER_CHUNK).min(count);
        let scenes = (start..end)
            .map(|i| tessera_world::generate_scene(first_seed + i as u64))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let grids = match images {
            Some(images) => images.encode_scenes(start, &scenes)?,
            None => vec![Vec::new(); scenes.len()],
        };
        for (scene, grids) in scenes.iter().zip(grids) {
            let mut sample = world_sample(tokenizer, scene)?;
            sample.extend(grids);
            samples.push(sample);
        }
        progress(samples.len());
    }
    Ok(InMemoryDataset { samples })
}

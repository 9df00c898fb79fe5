//! tessera-world: the shapes world, a procedural scene generator whose every 4M modality (RGB, depth,
//! normals, semantic and instance segmentation, edges, boxes, caption, palette, metadata) is exact
//! ground truth, used to train and evaluate tessera's own any-to-any model.
//!
//! Entry points: [`render_scene_to_dir`] (one scene, one file per modality), [`write_dataset`]
//! (many scenes in parallel, memory-mappable shards) and [`Dataset::open`] (reading them back);
//! [`generate_scene`] gives every modality of a scene in memory.

pub mod boxes;
pub mod caption;
pub mod dataset;
pub mod edges;
pub mod error;
mod font;
pub mod geometry;
pub mod image_io;
pub mod math;
pub mod metadata;
pub mod modalities;
pub mod palette;
pub mod render;
pub mod rng;
pub mod scene;
pub mod sheet;

pub use boxes::BoundingBox;
pub use dataset::{
    Dataset, DatasetOptions, DatasetSummary, ImageModality, SceneRecord, write_dataset,
};
pub use error::{MAX_SEED, WorldError, parse_seed, validate_seed};
pub use metadata::Metadata;
pub use modalities::{
    SCENE_FILE_NAMES, SceneModalities, generate_scene, render_scene_to_dir, write_scene_to_dir,
};
pub use palette::PaletteColour;
pub use scene::{IMAGE_SIZE, SceneSpec, SemanticClass};

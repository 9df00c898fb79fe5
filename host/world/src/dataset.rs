//! Datasets of many scenes, written in parallel into memory-mappable files and read back with mmap.
//!
//! Layout of a dataset directory (see the crate README for the full description):
//! - `<modality>.safetensors` for rgb, depth, normal, semseg, instance and edges: one tensor named
//!   after the modality, first dimension = scene index (`[N, 224, 224, C]`, u8, or u16 millimetres
//!   for depth), so scene `i` is one contiguous slice;
//! - `index.jsonl`: one JSON object per scene, in scene order (seed, caption, boxes, palette,
//!   metadata and their 4M serialisations);
//! - `dataset.json`: the manifest, written last, so a dataset without it is incomplete.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::boxes::{BoundingBox, boxes_to_4m_string};
use crate::error::{MAX_SEED, WorldError};
use crate::metadata::Metadata;
use crate::modalities::{SceneModalities, modalities_of, prepare_output_dir};
use crate::palette::{PaletteColour, palette_to_4m_string};
use crate::render::{depth_to_millimetres, encode_normals};
use crate::scene::{IMAGE_SIZE, SceneSpec, SemanticClass};

/// Name of the manifest file and the value of its `format` field.
pub const MANIFEST_FILE: &str = "dataset.json";
pub const FORMAT_NAME: &str = "tessera-world-dataset";
pub const FORMAT_VERSION: u32 = 1;
pub const INDEX_FILE: &str = "index.jsonl";

/// The image modalities stored as tensor shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageModality {
    Rgb = 0,
    Depth = 1,
    Normal = 2,
    Semseg = 3,
    Instance = 4,
    Edges = 5,
}

impl ImageModality {
    pub const ALL: [ImageModality; 6] = [
        ImageModality::Rgb,
        ImageModality::Depth,
        ImageModality::Normal,
        ImageModality::Semseg,
        ImageModality::Instance,
        ImageModality::Edges,
    ];

    /// Name of the modality, its tensor and (with `.safetensors`) its file.
    pub fn name(self) -> &'static str {
        match self {
            ImageModality::Rgb => "rgb",
            ImageModality::Depth => "depth",
            ImageModality::Normal => "normal",
            ImageModality::Semseg => "semseg",
            ImageModality::Instance => "instance",
            ImageModality::Edges => "edges",
        }
    }

    pub fn file_name(self) -> String {
        format!("{}.safetensors", self.name())
    }

    pub fn channels(self) -> usize {
        match self {
            ImageModality::Rgb | ImageModality::Normal => 3,
            _ => 1,
        }
    }

    /// Bytes per element: 2 for depth (u16 millimetres), 1 for the rest (u8).
    pub fn element_bytes(self) -> usize {
        if self == ImageModality::Depth { 2 } else { 1 }
    }

    pub fn safetensors_dtype(self) -> safetensors::Dtype {
        if self == ImageModality::Depth {
            safetensors::Dtype::U16
        } else {
            safetensors::Dtype::U8
        }
    }

    /// Shape of the whole tensor for `count` scenes; single-channel modalities have no channel axis.
    pub fn shape(self, count: usize) -> Vec<usize> {
        let mut shape = vec![count, IMAGE_SIZE, IMAGE_SIZE];
        if self.channels() > 1 {
            shape.push(self.channels());
        }
        shape
    }

    pub fn bytes_per_scene(self) -> usize {
        IMAGE_SIZE * IMAGE_SIZE * self.channels() * self.element_bytes()
    }

    /// This modality of a scene as stored: little-endian bytes in the tensor's layout.
    pub fn scene_bytes(self, modalities: &SceneModalities) -> Vec<u8> {
        let images = &modalities.images;
        match self {
            ImageModality::Rgb => images.rgb.clone(),
            ImageModality::Depth => depth_to_millimetres(&images.depth_metres)
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect(),
            ImageModality::Normal => encode_normals(&images.normals),
            ImageModality::Semseg => images.semseg.clone(),
            ImageModality::Instance => images.instance.clone(),
            ImageModality::Edges => modalities.edges.clone(),
        }
    }
}

/// What [`write_dataset`] should write.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetOptions {
    /// Number of scenes (at least 1).
    pub count: usize,
    /// Seed of scene 0; scene `i` has seed `first_seed + i`.
    pub first_seed: u64,
    /// Output directory (created if missing; files of an earlier dataset there are replaced).
    pub out: PathBuf,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// What [`write_dataset`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSummary {
    pub count: usize,
    pub first_seed: u64,
    pub out: PathBuf,
    pub files: Vec<PathBuf>,
    pub total_bytes: u64,
}

/// One line of `index.jsonl`: the sequence modalities of one scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    pub index: usize,
    pub seed: u64,
    pub caption: String,
    pub boxes: Vec<BoundingBox>,
    /// Boxes in 4M's `det` serialisation.
    pub det_4m: String,
    pub palette: Vec<PaletteColour>,
    /// Palette in 4M's `color_palette` serialisation.
    pub color_palette_4m: String,
    pub metadata: Metadata,
}

impl SceneRecord {
    pub fn new(index: usize, modalities: &SceneModalities) -> Self {
        Self {
            index,
            seed: modalities.scene.seed,
            caption: modalities.caption.clone(),
            boxes: modalities.boxes.clone(),
            det_4m: boxes_to_4m_string(&modalities.boxes),
            palette: modalities.palette.clone(),
            color_palette_4m: palette_to_4m_string(&modalities.palette),
            metadata: modalities.metadata.clone(),
        }
    }
}

/// Contents of `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub count: usize,
    pub first_seed: u64,
    pub image_size: usize,
    /// Tensor file per image modality name.
    pub images: BTreeMap<String, String>,
    pub index: String,
    /// Semantic class names, indexed by class id.
    pub semantic_classes: Vec<String>,
    pub depth_unit: String,
}

/// Checks options before anything is written.
fn validate(options: &DatasetOptions) -> Result<(), WorldError> {
    if options.count == 0 {
        return Err(WorldError::EmptyDataset { count: 0 });
    }
    if options.first_seed > MAX_SEED {
        return Err(WorldError::SeedOutOfRange {
            seed: options.first_seed,
            max: MAX_SEED,
        });
    }
    if MAX_SEED - options.first_seed < options.count as u64 - 1 {
        return Err(WorldError::SeedRangeOverflow {
            first_seed: options.first_seed,
            count: options.count,
            max: MAX_SEED,
        });
    }
    Ok(())
}

/// Writes `options.count` scenes in parallel. `progress(done, total)` is called from worker threads
/// after every scene; calls from different threads may arrive slightly out of order, so a progress
/// bar should keep the largest `done` seen. Scenes are rendered independently and written straight
/// to their offsets in preallocated shards, so memory stays flat however large the dataset.
pub fn write_dataset(
    options: &DatasetOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<DatasetSummary, WorldError> {
    validate(options)?;
    let out = &options.out;
    prepare_output_dir(out)?;
    // A leftover manifest would describe the old dataset while the new one is half written.
    let manifest_path = out.join(MANIFEST_FILE);
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path).map_err(WorldError::io("remove", &manifest_path))?;
    }

    let count = options.count;
    let mut shards = Vec::with_capacity(ImageModality::ALL.len());
    for modality in ImageModality::ALL {
        shards.push((modality, create_shard(out, modality, count)?));
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|error| WorldError::ThreadPool {
            threads: options.threads,
            message: error.to_string(),
        })?;
    let done = AtomicUsize::new(0);
    let index_lines: Vec<String> = pool.install(|| {
        (0..count)
            .into_par_iter()
            .map(|index| -> Result<String, WorldError> {
                let modalities =
                    modalities_of(SceneSpec::from_seed(options.first_seed + index as u64));
                for (modality, (file, data_start, path)) in &shards {
                    let offset = data_start + (index * modality.bytes_per_scene()) as u64;
                    write_at(file, &modality.scene_bytes(&modalities), offset)
                        .map_err(WorldError::io("write", path))?;
                }
                let line = serde_json::to_string(&SceneRecord::new(index, &modalities)).map_err(
                    |source| WorldError::Json {
                        action: "write",
                        path: out.join(INDEX_FILE),
                        source,
                    },
                )?;
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, count);
                Ok(line)
            })
            .collect::<Result<Vec<String>, WorldError>>()
    })?;

    let mut files: Vec<PathBuf> = shards
        .iter()
        .map(|(_, (_, _, path))| path.clone())
        .collect();
    let index_path = out.join(INDEX_FILE);
    let mut index_text = index_lines.join("\n");
    index_text.push('\n');
    std::fs::write(&index_path, index_text).map_err(WorldError::io("write", &index_path))?;
    files.push(index_path);

    let manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        count,
        first_seed: options.first_seed,
        image_size: IMAGE_SIZE,
        images: ImageModality::ALL
            .iter()
            .map(|m| (m.name().to_string(), m.file_name()))
            .collect(),
        index: INDEX_FILE.to_string(),
        semantic_classes: SemanticClass::ALL
            .iter()
            .map(|class| class.name().to_string())
            .collect(),
        depth_unit: "millimetres".to_string(),
    };
    let manifest_text =
        serde_json::to_string_pretty(&manifest).map_err(|source| WorldError::Json {
            action: "write",
            path: manifest_path.clone(),
            source,
        })?;
    std::fs::write(&manifest_path, manifest_text + "\n")
        .map_err(WorldError::io("write", &manifest_path))?;
    files.push(manifest_path);

    let mut total_bytes = 0;
    for file in &files {
        total_bytes += std::fs::metadata(file)
            .map_err(WorldError::io("inspect", file))?
            .len();
    }
    Ok(DatasetSummary {
        count,
        first_seed: options.first_seed,
        out: out.clone(),
        files,
        total_bytes,
    })
}

/// Creates a safetensors file holding one zero-filled tensor for `count` scenes; returns the file,
/// the byte offset where tensor data starts, and the path.
fn create_shard(
    dir: &Path,
    modality: ImageModality,
    count: usize,
) -> Result<(File, u64, PathBuf), WorldError> {
    let path = dir.join(modality.file_name());
    let data_bytes = count
        .checked_mul(modality.bytes_per_scene())
        .ok_or(WorldError::DatasetTooLarge { count })?;
    let header = serde_json::json!({
        "__metadata__": { "format": FORMAT_NAME, "modality": modality.name() },
        modality.name(): {
            "dtype": format!("{:?}", modality.safetensors_dtype()),
            "shape": modality.shape(count),
            "data_offsets": [0, data_bytes],
        }
    });
    let mut header_bytes = serde_json::to_vec(&header).map_err(|source| WorldError::Json {
        action: "write",
        path: path.clone(),
        source,
    })?;
    // Pad with spaces (allowed by the format) so tensor data starts 8-byte aligned in the mapping.
    while (8 + header_bytes.len()) % 8 != 0 {
        header_bytes.push(b' ');
    }
    let file = File::create(&path).map_err(WorldError::io("create", &path))?;
    let mut prefix = (header_bytes.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(&header_bytes);
    write_at(&file, &prefix, 0).map_err(WorldError::io("write", &path))?;
    let data_start = prefix.len() as u64;
    file.set_len(data_start + data_bytes as u64)
        .map_err(WorldError::io("resize", &path))?;
    Ok((file, data_start, path))
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(windows)]
fn write_at(file: &File, mut bytes: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let written = std::os::windows::fs::FileExt::seek_write(file, bytes, offset)?;
        bytes = &bytes[written..];
        offset += written as u64;
    }
    Ok(())
}

/// A dataset opened for reading: image shards memory-mapped, sequence records parsed.
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    /// One mapped shard per modality, in the order of [`ImageModality::ALL`].
    shards: Vec<MappedShard>,
    records: Vec<SceneRecord>,
}

struct MappedShard {
    map: memmap2::Mmap,
    data_start: usize,
}

impl Dataset {
    /// Opens a dataset written by [`write_dataset`], checking the manifest, every shard's tensor
    /// header (dtype, shape, size) and the number of index records.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, WorldError> {
        let dir = dir.as_ref().to_path_buf();
        let malformed = |reason: String| WorldError::MalformedDataset {
            path: dir.clone(),
            reason,
        };
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest_text = std::fs::read_to_string(&manifest_path)
            .map_err(WorldError::io("read", &manifest_path))?;
        let manifest: Manifest =
            serde_json::from_str(&manifest_text).map_err(|source| WorldError::Json {
                action: "read",
                path: manifest_path.clone(),
                source,
            })?;
        if manifest.format != FORMAT_NAME || manifest.version != FORMAT_VERSION {
            return Err(malformed(format!(
                "format {:?} version {} is not {FORMAT_NAME:?} version {FORMAT_VERSION}",
                manifest.format, manifest.version
            )));
        }
        if manifest.image_size != IMAGE_SIZE {
            return Err(malformed(format!(
                "image size {} is not {IMAGE_SIZE}",
                manifest.image_size
            )));
        }
        let count = manifest.count;

        let mut shards = Vec::new();
        for modality in ImageModality::ALL {
            let path = dir.join(modality.file_name());
            let file = File::open(&path).map_err(WorldError::io("open", &path))?;
            // SAFETY: the mapping is read-only; the dataset files are not modified while a reader
            // holds them (writers create new datasets, they do not edit opened ones).
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(WorldError::io("memory-map", &path))?;
            let (header_size, metadata) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|error| malformed(format!("{}: {error}", modality.file_name())))?;
            let info = metadata.info(modality.name()).ok_or_else(|| {
                malformed(format!(
                    "{} has no tensor {:?}",
                    modality.file_name(),
                    modality.name()
                ))
            })?;
            let expected_bytes = count
                .checked_mul(modality.bytes_per_scene())
                .ok_or_else(|| malformed(format!("scene count {count} is impossibly large")))?;
            if info.dtype != modality.safetensors_dtype()
                || info.shape != modality.shape(count)
                || info.data_offsets.1.checked_sub(info.data_offsets.0) != Some(expected_bytes)
            {
                return Err(malformed(format!(
                    "{}: tensor is {:?} {:?}, expected {:?} {:?}",
                    modality.file_name(),
                    info.dtype,
                    info.shape,
                    modality.safetensors_dtype(),
                    modality.shape(count)
                )));
            }
            let data_start = (8 + header_size).saturating_add(info.data_offsets.0);
            if map.len() < data_start.saturating_add(expected_bytes) {
                return Err(malformed(format!("{} is truncated", modality.file_name())));
            }
            shards.push(MappedShard { map, data_start });
        }

        let index_path = dir.join(&manifest.index);
        let index_text =
            std::fs::read_to_string(&index_path).map_err(WorldError::io("read", &index_path))?;
        let records = index_text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str::<SceneRecord>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| WorldError::Json {
                action: "read",
                path: index_path.clone(),
                source,
            })?;
        if records.len() != count {
            return Err(malformed(format!(
                "{} has {} records for {count} scenes",
                manifest.index,
                records.len()
            )));
        }
        if let Some(record) = records
            .iter()
            .enumerate()
            .find(|(position, record)| record.index != *position)
        {
            return Err(malformed(format!("record {} is out of order", record.0)));
        }
        Ok(Self {
            dir,
            manifest,
            shards,
            records,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn len(&self) -> usize {
        self.manifest.count
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.count == 0
    }

    fn check_index(&self, index: usize) -> Result<(), WorldError> {
        if index < self.len() {
            Ok(())
        } else {
            Err(WorldError::SceneIndexOutOfRange {
                index,
                len: self.len(),
            })
        }
    }

    /// The sequence modalities of scene `index`.
    pub fn record(&self, index: usize) -> Result<&SceneRecord, WorldError> {
        self.check_index(index)?;
        Ok(&self.records[index])
    }

    pub fn records(&self) -> &[SceneRecord] {
        &self.records
    }

    /// The whole tensor of a modality, straight from the mapping (little-endian, row-major).
    pub fn tensor_bytes(&self, modality: ImageModality) -> &[u8] {
        // `open` maps every modality in the order of ALL, whose positions are the discriminants.
        let shard = &self.shards[modality as usize];
        &shard.map[shard.data_start..shard.data_start + self.len() * modality.bytes_per_scene()]
    }

    /// One scene's image of a modality, straight from the mapping.
    pub fn image_bytes(&self, modality: ImageModality, index: usize) -> Result<&[u8], WorldError> {
        self.check_index(index)?;
        let per_scene = modality.bytes_per_scene();
        Ok(&self.tensor_bytes(modality)[index * per_scene..(index + 1) * per_scene])
    }

    /// One scene's depth in millimetres.
    pub fn depth_millimetres(&self, index: usize) -> Result<Vec<u16>, WorldError> {
        let bytes = self.image_bytes(ImageModality::Depth, index)?;
        Ok(bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_seed_ranges_are_refused() {
        let options = |count, first_seed| DatasetOptions {
            count,
            first_seed,
            out: PathBuf::from("unused"),
            threads: 1,
        };
        assert!(validate(&options(1, MAX_SEED)).is_ok());
        assert!(matches!(
            validate(&options(2, MAX_SEED)),
            Err(WorldError::SeedRangeOverflow { .. })
        ));
        assert!(matches!(
            validate(&options(1, MAX_SEED + 1)),
            Err(WorldError::SeedOutOfRange { .. })
        ));
        assert!(matches!(
            validate(&options(0, 0)),
            Err(WorldError::EmptyDataset { count: 0 })
        ));
    }

    #[test]
    fn shapes_and_sizes_agree() {
        assert_eq!(ImageModality::Rgb.shape(5), vec![5, 224, 224, 3]);
        assert_eq!(ImageModality::Depth.shape(5), vec![5, 224, 224]);
        assert_eq!(ImageModality::Depth.bytes_per_scene(), 224 * 224 * 2);
    }
}

//! All modalities of one scene together, and writing them to a directory as one file per modality
//! plus a contact sheet.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::boxes::{BoundingBox, boxes_from_instances, boxes_to_4m_string};
use crate::caption::caption_for;
use crate::edges::canny_edges;
use crate::error::{WorldError, validate_seed};
use crate::image_io::{
    Canvas, INSTANCE_DISPLAY_COLOURS, PngPixels, SEMSEG_DISPLAY_COLOURS, heat_colour, write_png,
};
use crate::metadata::{Metadata, compute_metadata};
use crate::palette::{PaletteColour, dominant_colours, palette_to_4m_string};
use crate::render::{RenderedImages, depth_to_millimetres, encode_normals, render};
use crate::scene::{IMAGE_SIZE, SceneSpec};

/// Every modality of one scene, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneModalities {
    pub scene: SceneSpec,
    pub images: RenderedImages,
    /// Canny-style edge map: 255 on edges, 0 elsewhere.
    pub edges: Vec<u8>,
    pub boxes: Vec<BoundingBox>,
    pub caption: String,
    pub palette: Vec<PaletteColour>,
    pub metadata: Metadata,
}

/// Samples, renders and derives every modality of the scene with this seed.
pub fn generate_scene(seed: u64) -> Result<SceneModalities, WorldError> {
    validate_seed(seed)?;
    Ok(modalities_of(SceneSpec::from_seed(seed)))
}

/// Renders a sampled scene and derives the sequence modalities from the rendered images.
pub fn modalities_of(scene: SceneSpec) -> SceneModalities {
    let images = render(&scene);
    let edges = canny_edges(&images.rgb);
    let boxes = boxes_from_instances(&scene, &images.instance);
    let caption = caption_for(&scene, &boxes);
    let palette = dominant_colours(&images.rgb);
    let metadata = compute_metadata(&images, &boxes, &caption);
    SceneModalities {
        scene,
        images,
        edges,
        boxes,
        caption,
        palette,
        metadata,
    }
}

/// Contents of boxes.json.
#[derive(Serialize)]
struct BoxesFile<'a> {
    image_size: usize,
    boxes: &'a [BoundingBox],
    /// The same boxes in 4M's `det` serialisation.
    det_4m: String,
}

/// Contents of palette.json.
#[derive(Serialize)]
struct PaletteFile<'a> {
    colours: &'a [PaletteColour],
    /// The same palette in 4M's `color_palette` serialisation.
    color_palette_4m: String,
}

/// The files [`write_scene_to_dir`] writes, in this order.
pub const SCENE_FILE_NAMES: [&str; 12] = [
    "rgb.png",
    "depth.png",
    "normal.png",
    "semseg.png",
    "instance.png",
    "edges.png",
    "caption.txt",
    "boxes.json",
    "palette.json",
    "metadata.json",
    "scene.json",
    "contact_sheet.png",
];

/// Renders the scene with this seed and writes every modality into `dir` (created if missing).
/// Returns the paths written.
pub fn render_scene_to_dir(seed: u64, dir: &Path) -> Result<Vec<PathBuf>, WorldError> {
    let modalities = generate_scene(seed)?;
    write_scene_to_dir(&modalities, dir)
}

/// Writes every modality of a scene into `dir` (created if missing): rgb.png, depth.png (16-bit,
/// millimetres), normal.png, semseg.png and instance.png (indexed: the values are the ids),
/// edges.png, caption.txt, boxes.json, palette.json, metadata.json, scene.json and contact_sheet.png.
pub fn write_scene_to_dir(
    modalities: &SceneModalities,
    dir: &Path,
) -> Result<Vec<PathBuf>, WorldError> {
    prepare_output_dir(dir)?;
    let size = IMAGE_SIZE;
    let images = &modalities.images;
    let mut written = Vec::new();
    let mut png = |name: &str, pixels: PngPixels<'_>| -> Result<(), WorldError> {
        let path = dir.join(name);
        write_png(&path, size, size, pixels)?;
        written.push(path);
        Ok(())
    };
    png("rgb.png", PngPixels::Rgb8(&images.rgb))?;
    png(
        "depth.png",
        PngPixels::Gray16(&depth_to_millimetres(&images.depth_metres)),
    )?;
    png(
        "normal.png",
        PngPixels::Rgb8(&encode_normals(&images.normals)),
    )?;
    png(
        "semseg.png",
        PngPixels::Indexed {
            ids: &images.semseg,
            palette: &SEMSEG_DISPLAY_COLOURS,
        },
    )?;
    png(
        "instance.png",
        PngPixels::Indexed {
            ids: &images.instance,
            palette: &INSTANCE_DISPLAY_COLOURS,
        },
    )?;
    png("edges.png", PngPixels::Gray8(&modalities.edges))?;

    let mut text = |name: &str, contents: String| -> Result<(), WorldError> {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(WorldError::io("write", &path))?;
        written.push(path);
        Ok(())
    };
    text("caption.txt", format!("{}\n", modalities.caption))?;
    let boxes_file = BoxesFile {
        image_size: size,
        boxes: &modalities.boxes,
        det_4m: boxes_to_4m_string(&modalities.boxes),
    };
    text(
        "boxes.json",
        pretty_json(&boxes_file, &dir.join("boxes.json"))?,
    )?;
    let palette_file = PaletteFile {
        colours: &modalities.palette,
        color_palette_4m: palette_to_4m_string(&modalities.palette),
    };
    text(
        "palette.json",
        pretty_json(&palette_file, &dir.join("palette.json"))?,
    )?;
    text(
        "metadata.json",
        pretty_json(&modalities.metadata, &dir.join("metadata.json"))?,
    )?;
    text(
        "scene.json",
        pretty_json(&modalities.scene, &dir.join("scene.json"))?,
    )?;

    let sheet = contact_sheet(modalities);
    let path = dir.join("contact_sheet.png");
    write_png(
        &path,
        sheet.width,
        sheet.height,
        PngPixels::Rgb8(&sheet.pixels),
    )?;
    written.push(path);
    Ok(written)
}

/// Pretty-printed JSON with a final newline; `path` only names the file in errors.
fn pretty_json(value: &impl Serialize, path: &Path) -> Result<String, WorldError> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|source| WorldError::Json {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
}

/// Creates `dir` if needed; fails clearly when it is a file or cannot be created.
pub(crate) fn prepare_output_dir(dir: &Path) -> Result<(), WorldError> {
    if dir.exists() && !dir.is_dir() {
        return Err(WorldError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(WorldError::io("create directory", dir))
}

/// A 4 × 2 grid, each tile labelled: RGB, RGB with boxes, depth, normals / semantic classes,
/// instances, edges, palette; the caption and seed below.
fn contact_sheet(modalities: &SceneModalities) -> Canvas {
    use crate::font::{CELL_WIDTH, LINE_HEIGHT, wrap};
    const TEXT_SCALE: usize = 2;
    let size = IMAGE_SIZE;
    let gap = 4;
    let label_height = LINE_HEIGHT * TEXT_SCALE;
    let width = 4 * size + 5 * gap;
    let caption = format!("seed {}: {}", modalities.scene.seed, modalities.caption);
    let caption_lines = wrap(&caption, (width - 2 * gap) / (CELL_WIDTH * TEXT_SCALE));
    let caption_height = caption_lines.len() * LINE_HEIGHT * TEXT_SCALE + gap;
    let height = 2 * (label_height + size) + 3 * gap + caption_height;
    let mut canvas = Canvas::new(width, height, [255, 255, 255]);
    let labels = [
        "rgb", "boxes", "depth", "normal", "semseg", "instance", "edges", "palette",
    ];
    for (index, label) in labels.iter().enumerate() {
        let (column, row) = (index % 4, index / 4);
        let left = gap + column * (size + gap);
        let top = gap + row * (label_height + size + gap);
        canvas.draw_text(left, top + 2, label, [40, 40, 40], TEXT_SCALE);
    }
    let caption_top = 2 * (label_height + size + gap) + gap;
    for (line_index, line) in caption_lines.iter().enumerate() {
        canvas.draw_text(
            gap,
            caption_top + line_index * LINE_HEIGHT * TEXT_SCALE,
            line,
            [20, 20, 20],
            TEXT_SCALE,
        );
    }
    let cell = |column: usize, row: usize| {
        (
            gap + column * (size + gap),
            gap + row * (label_height + size + gap) + label_height,
        )
    };
    let images = &modalities.images;
    let rgb_at = |pixel: usize| {
        [
            images.rgb[pixel * 3],
            images.rgb[pixel * 3 + 1],
            images.rgb[pixel * 3 + 2],
        ]
    };

    let (left, top) = cell(0, 0);
    canvas.draw_tile(left, top, rgb_at);

    let (left, top) = cell(1, 0);
    canvas.draw_tile(left, top, rgb_at);
    for bounding_box in &modalities.boxes {
        let [xmin, ymin, xmax, ymax] = bounding_box.pixel_box.map(|value| value as usize);
        let colour = INSTANCE_DISPLAY_COLOURS
            [bounding_box.instance_id as usize % INSTANCE_DISPLAY_COLOURS.len()];
        canvas.draw_rectangle(left + xmin, top + ymin, left + xmax, top + ymax, colour);
    }

    let (nearest, farthest) = images
        .depth_metres
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), &depth| {
            (low.min(depth), high.max(depth))
        });
    let span = (farthest - nearest).max(1e-6);
    let (left, top) = cell(2, 0);
    canvas.draw_tile(left, top, |pixel| {
        heat_colour(1.0 - ((images.depth_metres[pixel] - nearest) / span) as f64)
    });

    let normals = encode_normals(&images.normals);
    let (left, top) = cell(3, 0);
    canvas.draw_tile(left, top, |pixel| {
        [
            normals[pixel * 3],
            normals[pixel * 3 + 1],
            normals[pixel * 3 + 2],
        ]
    });

    let (left, top) = cell(0, 1);
    canvas.draw_tile(left, top, |pixel| {
        SEMSEG_DISPLAY_COLOURS[images.semseg[pixel] as usize % SEMSEG_DISPLAY_COLOURS.len()]
    });

    let (left, top) = cell(1, 1);
    canvas.draw_tile(left, top, |pixel| {
        INSTANCE_DISPLAY_COLOURS[images.instance[pixel] as usize % INSTANCE_DISPLAY_COLOURS.len()]
    });

    let (left, top) = cell(2, 1);
    canvas.draw_tile(left, top, |pixel| [modalities.edges[pixel]; 3]);

    // Palette: one horizontal band per colour, its height proportional to the colour's share.
    let (left, top) = cell(3, 1);
    let total: f64 = modalities
        .palette
        .iter()
        .map(|colour| colour.fraction)
        .sum::<f64>()
        .max(1e-9);
    let mut band_top = 0usize;
    for (index, colour) in modalities.palette.iter().enumerate() {
        let band_bottom = if index + 1 == modalities.palette.len() {
            size
        } else {
            band_top + ((colour.fraction / total) * size as f64).round() as usize
        };
        canvas.fill_rectangle(
            left,
            top + band_top,
            size,
            band_bottom.saturating_sub(band_top).min(size - band_top),
            colour.rgb,
        );
        band_top = band_bottom.min(size);
    }
    canvas
}

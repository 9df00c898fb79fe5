//! Integration tests of the shapes world: determinism, cross-modality consistency on many seeds,
//! files on disk, datasets, and refusal of bad arguments.

use std::path::Path;

use tessera_world::{SceneModalities, SemanticClass, generate_scene};

/// Seeds spread over the range rather than 0..n, so that tests do not only see small seeds.
fn sample_seeds(count: u64) -> impl Iterator<Item = u64> {
    (0..count).map(|index| index.wrapping_mul(0x9E37_79B9) % tessera_world::MAX_SEED)
}

fn decode_png(path: &Path) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    buffer.truncate(info.buffer_size());
    (info, buffer)
}

mod determinism {
    use super::*;

    #[test]
    fn same_seed_gives_byte_identical_files() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let written = tessera_world::render_scene_to_dir(1234, first.path()).unwrap();
        tessera_world::render_scene_to_dir(1234, second.path()).unwrap();
        let names: Vec<&str> = written
            .iter()
            .map(|path| path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, tessera_world::SCENE_FILE_NAMES);
        for path in &written {
            let name = path.file_name().unwrap();
            let again = std::fs::read(second.path().join(name)).unwrap();
            assert_eq!(
                std::fs::read(path).unwrap(),
                again,
                "{name:?} differs between runs"
            );
        }
    }

    #[test]
    fn different_seeds_give_different_scenes() {
        let first = generate_scene(5).unwrap();
        let second = generate_scene(6).unwrap();
        assert_ne!(first.images.rgb, second.images.rgb);
    }
}

mod consistency {
    use super::*;

    use rayon::prelude::*;

    /// Seeds checked by default; `TESSERA_WORLD_TEST_SEEDS=N` checks N instead (for soak runs in release).
    fn seed_count() -> u64 {
        std::env::var("TESSERA_WORLD_TEST_SEEDS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(24)
    }

    /// The scenes every consistency test checks, generated once (in parallel) and shared.
    fn scenes() -> impl Iterator<Item = &'static SceneModalities> {
        static SCENES: std::sync::OnceLock<Vec<SceneModalities>> = std::sync::OnceLock::new();
        SCENES
            .get_or_init(|| {
                let seeds: Vec<u64> = sample_seeds(seed_count()).collect();
                seeds
                    .into_par_iter()
                    .map(|seed| generate_scene(seed).unwrap())
                    .collect()
            })
            .iter()
    }

    /// Camera-frame point of a pixel centre from z-depth (x right, y up, z towards the viewer).
    fn back_project(scene: &SceneModalities, column: usize, row: usize) -> [f64; 3] {
        let size = tessera_world::IMAGE_SIZE;
        let focal = scene.scene.camera.focal_length_px;
        let depth = scene.images.depth_metres[row * size + column] as f64;
        let centre = size as f64 / 2.0;
        [
            (column as f64 + 0.5 - centre) / focal * depth,
            (centre - (row as f64 + 0.5)) / focal * depth,
            -depth,
        ]
    }

    /// Angle in degrees between the normal estimated from depth by central differences at a pixel and
    /// the rendered normal there.
    fn depth_normal_error_degrees(scene: &SceneModalities, column: usize, row: usize) -> f64 {
        let size = tessera_world::IMAGE_SIZE;
        let normals = &scene.images.normals;
        let pixel = row * size + column;
        let rendered = [
            normals[pixel * 3] as f64,
            normals[pixel * 3 + 1] as f64,
            normals[pixel * 3 + 2] as f64,
        ];
        let right = back_project(scene, column + 1, row);
        let left = back_project(scene, column - 1, row);
        let below = back_project(scene, column, row + 1);
        let above = back_project(scene, column, row - 1);
        let horizontal = [right[0] - left[0], right[1] - left[1], right[2] - left[2]];
        let vertical = [
            above[0] - below[0],
            above[1] - below[1],
            above[2] - below[2],
        ];
        let cross = [
            horizontal[1] * vertical[2] - horizontal[2] * vertical[1],
            horizontal[2] * vertical[0] - horizontal[0] * vertical[2],
            horizontal[0] * vertical[1] - horizontal[1] * vertical[0],
        ];
        let length = cross.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cosine = cross
            .iter()
            .zip(rendered)
            .map(|(a, b)| a / length * b)
            .sum::<f64>();
        cosine.clamp(-1.0, 1.0).acos().to_degrees()
    }

    /// A pixel lies on a smooth surface when its four neighbours (the ones central differences use)
    /// show the same object or background class and rendered normals within about 5.7° of its own.
    fn on_smooth_surface(scene: &SceneModalities, column: usize, row: usize) -> bool {
        let size = tessera_world::IMAGE_SIZE;
        let images = &scene.images;
        let pixel = row * size + column;
        [pixel - 1, pixel + 1, pixel - size, pixel + size]
            .into_iter()
            .all(|other| {
                images.instance[other] == images.instance[pixel]
                    && images.semseg[other] == images.semseg[pixel]
                    && (0..3)
                        .map(|axis| {
                            images.normals[pixel * 3 + axis] * images.normals[other * 3 + axis]
                        })
                        .sum::<f32>()
                        > 0.995
            })
    }

    #[test]
    fn normals_from_depth_gradients_match_rendered_normals_on_smooth_surfaces() {
        let size = tessera_world::IMAGE_SIZE;
        let scenes: Vec<&SceneModalities> = scenes().collect();
        let per_scene: Vec<(usize, f64)> = scenes
            .par_iter()
            .map(|scene| {
                let mut checked = 0usize;
                let mut worst = 0.0f64;
                for row in 1..size - 1 {
                    for column in 1..size - 1 {
                        if !on_smooth_surface(scene, column, row) {
                            continue;
                        }
                        let degrees = depth_normal_error_degrees(scene, column, row);
                        assert!(
                            degrees < 1.5,
                            "seed {} pixel ({column}, {row}): depth normal off by {degrees:.2}°",
                            scene.scene.seed
                        );
                        worst = worst.max(degrees);
                        checked += 1;
                    }
                }
                (checked, worst)
            })
            .collect();
        let checked: usize = per_scene.iter().map(|(count, _)| count).sum();
        let worst = per_scene
            .iter()
            .map(|(_, worst)| *worst)
            .fold(0.0, f64::max);
        assert!(
            checked > seed_count() as usize * 40_000,
            "only {checked} smooth pixels checked"
        );
        eprintln!("checked {checked} pixels, worst {worst:.3}°");
    }

    #[test]
    fn boxes_contain_exactly_their_instances_visible_pixels() {
        let size = tessera_world::IMAGE_SIZE;
        for scene in scenes() {
            let visible_ids: std::collections::BTreeSet<u8> = scene
                .images
                .instance
                .iter()
                .copied()
                .filter(|&id| id != 0)
                .collect();
            let boxed_ids: std::collections::BTreeSet<u8> =
                scene.boxes.iter().map(|b| b.instance_id).collect();
            assert_eq!(
                visible_ids, boxed_ids,
                "seed {}: every visible instance has one box",
                scene.scene.seed
            );
            for bounding_box in &scene.boxes {
                let [xmin, ymin, xmax, ymax] = bounding_box.pixel_box.map(|v| v as usize);
                let mut inside = 0u32;
                let (mut touches_left, mut touches_right, mut touches_top, mut touches_bottom) =
                    (false, false, false, false);
                for (pixel, &id) in scene.images.instance.iter().enumerate() {
                    if id != bounding_box.instance_id {
                        continue;
                    }
                    let (column, row) = (pixel % size, pixel / size);
                    assert!(
                        (xmin..=xmax).contains(&column) && (ymin..=ymax).contains(&row),
                        "pixel outside its box"
                    );
                    inside += 1;
                    touches_left |= column == xmin;
                    touches_right |= column == xmax;
                    touches_top |= row == ymin;
                    touches_bottom |= row == ymax;
                }
                assert_eq!(inside, bounding_box.visible_pixels);
                assert!(
                    touches_left && touches_right && touches_top && touches_bottom,
                    "box is not tight"
                );
                let object = scene
                    .scene
                    .objects
                    .iter()
                    .find(|o| o.instance_id == bounding_box.instance_id)
                    .unwrap();
                assert_eq!(bounding_box.label, object.shape.name());
            }
        }
    }

    /// Finds the box a caption's "size colour shape" phrase names.
    fn named_box<'a>(scene: &'a SceneModalities, words: &[&str]) -> &'a tessera_world::BoundingBox {
        let [size, colour, shape] = words else {
            panic!("bad description {words:?}")
        };
        scene
            .boxes
            .iter()
            .find(|b| b.size == *size && b.colour == *colour && b.label == *shape)
            .unwrap_or_else(|| {
                panic!(
                    "seed {}: caption names {words:?}, which has no box",
                    scene.scene.seed
                )
            })
    }

    #[test]
    fn every_relation_a_caption_states_holds_for_the_boxes() {
        let shapes = ["sphere", "cube", "cylinder", "cone"];
        let mut relations_checked = 0;
        for scene in scenes() {
            let seed = scene.scene.seed;
            let words: Vec<&str> = scene
                .caption
                .split(|c: char| c.is_whitespace() || c == '.' || c == ',' || c == ':')
                .filter(|word| !word.is_empty())
                .collect();
            let mut related_pairs = std::collections::HashSet::new();
            for (position, word) in words.iter().enumerate() {
                let relation = match *word {
                    "left" => "left",
                    "right" => "right",
                    "front" => "front",
                    "behind" => "behind",
                    _ => continue,
                };
                let subject_end = (0..position)
                    .rev()
                    .find(|&i| shapes.contains(&words[i]))
                    .expect("subject");
                let object_end = (position..words.len())
                    .find(|&i| shapes.contains(&words[i]))
                    .expect("object");
                let subject = named_box(scene, &words[subject_end - 2..=subject_end]);
                let object = named_box(scene, &words[object_end - 2..=object_end]);
                let centre =
                    |b: &tessera_world::BoundingBox| (b.pixel_box[0] + b.pixel_box[2]) as f64 / 2.0;
                let holds = match relation {
                    "left" => {
                        subject.pixel_box[0] < object.pixel_box[0]
                            && centre(subject) + 12.0 <= centre(object)
                    }
                    "right" => {
                        subject.pixel_box[2] > object.pixel_box[2]
                            && centre(subject) >= centre(object) + 12.0
                    }
                    "front" => subject.pixel_box[3] >= object.pixel_box[3] + 6,
                    _ => object.pixel_box[3] >= subject.pixel_box[3] + 6,
                };
                assert!(
                    holds,
                    "seed {seed}: {:?} is false for boxes {subject:?} {object:?}",
                    scene.caption
                );
                let pair = (
                    subject.instance_id.min(object.instance_id),
                    subject.instance_id.max(object.instance_id),
                );
                assert!(
                    related_pairs.insert(pair),
                    "seed {seed}: {:?} relates a pair twice",
                    scene.caption
                );
                relations_checked += 1;
            }
            // A stated object count is the number of boxes.
            let counts = ["one", "two", "three", "four", "five", "six"];
            if let Some((count_word, _)) = scene.caption.split_once(" objects:") {
                let stated = counts.iter().position(|c| *c == count_word.trim()).unwrap() + 1;
                assert_eq!(stated, scene.boxes.len(), "seed {seed}: {}", scene.caption);
            }
            // Every object named in the caption exists.
            for (position, word) in words.iter().enumerate() {
                if shapes.contains(word) {
                    named_box(scene, &words[position - 2..=position]);
                }
            }
        }
        assert!(
            relations_checked as u64 >= seed_count() / 2,
            "only {relations_checked} relations stated in {} captions",
            seed_count()
        );
    }

    #[test]
    fn semantic_and_instance_maps_agree() {
        for scene in scenes() {
            for (pixel, (&class_id, &instance_id)) in scene
                .images
                .semseg
                .iter()
                .zip(&scene.images.instance)
                .enumerate()
            {
                let class = SemanticClass::from_id(class_id).expect("known class");
                if instance_id == 0 {
                    assert!(
                        !class.is_object(),
                        "seed {} pixel {pixel}: object class without instance",
                        scene.scene.seed
                    );
                } else {
                    let object = &scene.scene.objects[instance_id as usize - 1];
                    assert_eq!(object.instance_id, instance_id);
                    assert_eq!(
                        class,
                        object.shape.class(),
                        "seed {} pixel {pixel}",
                        scene.scene.seed
                    );
                }
            }
        }
    }

    #[test]
    fn palette_colours_occur_in_the_image() {
        for scene in scenes() {
            assert!(
                (1..=7).contains(&scene.palette.len()),
                "seed {}: {} colours",
                scene.scene.seed,
                scene.palette.len()
            );
            for colour in &scene.palette {
                let occurs = scene
                    .images
                    .rgb
                    .chunks_exact(3)
                    .any(|pixel| pixel == colour.rgb);
                assert!(
                    occurs,
                    "seed {}: palette colour {:?} is not in the image",
                    scene.scene.seed, colour.rgb
                );
            }
            let fractions: Vec<f64> = scene.palette.iter().map(|c| c.fraction).collect();
            assert!(
                fractions.windows(2).all(|pair| pair[0] >= pair[1]),
                "most frequent first"
            );
        }
    }

    #[test]
    fn metadata_matches_the_other_modalities() {
        for scene in scenes() {
            let metadata = &scene.metadata;
            let pixels = scene.images.semseg.len() as f64;
            let floor = scene
                .images
                .semseg
                .iter()
                .filter(|&&id| id == SemanticClass::Floor.id())
                .count() as f64;
            let objects = scene.images.instance.iter().filter(|&&id| id != 0).count() as f64;
            assert_eq!(metadata.n_coco_instances as usize, scene.boxes.len());
            assert!((metadata.walkability - floor / pixels).abs() < 1e-12);
            assert!((metadata.objectness - objects / pixels).abs() < 1e-12);
            assert_eq!(
                metadata.caption_n_words as usize,
                scene.caption.split_whitespace().count()
            );
            assert!((0.0..=255.0).contains(&metadata.brightness));
            assert!((0.0..=1.0).contains(&metadata.occlusion_score));
            assert!((0.0..=1.0).contains(&metadata.geometric_complexity));
            assert!(metadata.entropy > 0.0 && metadata.entropy <= 8.0);
        }
    }
}

mod files {
    use super::*;

    #[test]
    fn written_images_decode_to_the_rendered_values() {
        let dir = tempfile::tempdir().unwrap();
        tessera_world::render_scene_to_dir(77, dir.path()).unwrap();
        let scene = generate_scene(77).unwrap();

        let (info, rgb) = decode_png(&dir.path().join("rgb.png"));
        assert_eq!((info.width, info.height), (224, 224));
        assert_eq!(rgb, scene.images.rgb);

        let (info, depth) = decode_png(&dir.path().join("depth.png"));
        assert_eq!(info.bit_depth, png::BitDepth::Sixteen);
        for (pixel, pair) in depth.chunks_exact(2).enumerate() {
            let millimetres = u16::from_be_bytes([pair[0], pair[1]]) as f32;
            assert!((millimetres / 1000.0 - scene.images.depth_metres[pixel]).abs() <= 0.0006);
        }

        let (info, semseg) = decode_png(&dir.path().join("semseg.png"));
        assert_eq!(info.color_type, png::ColorType::Indexed);
        assert_eq!(
            semseg, scene.images.semseg,
            "indexed PNG values are the class ids"
        );
        let (_, instance) = decode_png(&dir.path().join("instance.png"));
        assert_eq!(instance, scene.images.instance);

        let caption = std::fs::read_to_string(dir.path().join("caption.txt")).unwrap();
        assert_eq!(caption.trim_end(), scene.caption);
        let metadata: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metadata.json")).unwrap(),
        )
        .unwrap();
        for key in [
            "original_width",
            "n_coco_instances",
            "colorfulness",
            "occlusion_score",
            "geometric_complexity",
        ] {
            assert!(metadata.get(key).is_some(), "metadata.json lacks {key}");
        }
        let boxes: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("boxes.json")).unwrap())
                .unwrap();
        assert_eq!(boxes["boxes"].as_array().unwrap().len(), scene.boxes.len());
    }
}

mod dataset {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tessera_world::{Dataset, DatasetOptions, ImageModality};

    #[test]
    fn written_dataset_reads_back_scene_for_scene() {
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicUsize::new(0);
        let options = DatasetOptions {
            count: 4,
            first_seed: 500,
            out: dir.path().join("data"),
            threads: 2,
        };
        let summary = tessera_world::write_dataset(&options, &|done, total| {
            assert!(done >= 1 && done <= total && total == 4);
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert_eq!(summary.count, 4);

        let dataset = Dataset::open(&options.out).unwrap();
        assert_eq!(dataset.len(), 4);
        for index in 0..4 {
            let scene = generate_scene(500 + index as u64).unwrap();
            let record = dataset.record(index).unwrap();
            assert_eq!(record.seed, 500 + index as u64);
            assert_eq!(record.caption, scene.caption);
            assert_eq!(record.boxes, scene.boxes);
            assert_eq!(record.metadata, scene.metadata);
            assert_eq!(
                dataset.image_bytes(ImageModality::Rgb, index).unwrap(),
                scene.images.rgb.as_slice()
            );
            assert_eq!(
                dataset.image_bytes(ImageModality::Instance, index).unwrap(),
                scene.images.instance.as_slice()
            );
            assert_eq!(
                dataset.image_bytes(ImageModality::Edges, index).unwrap(),
                scene.edges.as_slice()
            );
            let depth = dataset.depth_millimetres(index).unwrap();
            assert_eq!(
                depth[1000],
                (scene.images.depth_metres[1000] * 1000.0).round() as u16
            );
        }
        assert!(matches!(
            dataset.record(4),
            Err(tessera_world::WorldError::SceneIndexOutOfRange { index: 4, len: 4 })
        ));

        // The shards are standard safetensors files.
        let bytes = std::fs::read(options.out.join("rgb.safetensors")).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(tensors.tensor("rgb").unwrap().shape(), &[4, 224, 224, 3]);
    }

    #[test]
    fn thread_count_does_not_change_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, threads| {
            let out = dir.path().join(name);
            let options = DatasetOptions {
                count: 3,
                first_seed: 9,
                out: out.clone(),
                threads,
            };
            tessera_world::write_dataset(&options, &|_, _| {}).unwrap();
            out
        };
        let one = write("one", 1);
        let two = write("two", 2);
        for name in [
            "rgb.safetensors",
            "depth.safetensors",
            "edges.safetensors",
            "index.jsonl",
            "dataset.json",
        ] {
            assert_eq!(
                std::fs::read(one.join(name)).unwrap(),
                std::fs::read(two.join(name)).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn manifest_that_disagrees_with_the_shards_is_reported_as_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let options = DatasetOptions {
            count: 2,
            first_seed: 0,
            out: dir.path().to_path_buf(),
            threads: 1,
        };
        tessera_world::write_dataset(&options, &|_, _| {}).unwrap();
        let manifest_path = dir.path().join("dataset.json");
        let manifest = std::fs::read_to_string(&manifest_path).unwrap();
        for wrong_count in ["3", "18446744073709551615"] {
            let edited = manifest.replace("\"count\": 2", &format!("\"count\": {wrong_count}"));
            assert_ne!(edited, manifest);
            std::fs::write(&manifest_path, edited).unwrap();
            let error = Dataset::open(dir.path())
                .err()
                .expect("wrong count must fail");
            assert!(
                matches!(error, tessera_world::WorldError::MalformedDataset { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn truncated_shard_is_reported_as_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let options = DatasetOptions {
            count: 2,
            first_seed: 0,
            out: dir.path().to_path_buf(),
            threads: 1,
        };
        tessera_world::write_dataset(&options, &|_, _| {}).unwrap();
        let shard = dir.path().join("normal.safetensors");
        let length = std::fs::metadata(&shard).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(length - 10)
            .unwrap();
        let error = Dataset::open(dir.path())
            .err()
            .expect("truncated shard must fail");
        assert!(
            matches!(error, tessera_world::WorldError::MalformedDataset { .. }),
            "{error}"
        );
    }
}

mod bad_arguments {
    use tessera_world::{DatasetOptions, MAX_SEED, WorldError};

    #[test]
    fn zero_scene_dataset_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never");
        let options = DatasetOptions {
            count: 0,
            first_seed: 0,
            out: out.clone(),
            threads: 1,
        };
        let error = tessera_world::write_dataset(&options, &|_, _| {}).unwrap_err();
        assert!(matches!(error, WorldError::EmptyDataset { count: 0 }));
        assert!(error.to_string().contains("at least one scene"), "{error}");
        assert!(!out.exists());
    }

    #[test]
    fn unwritable_output_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();

        let error = tessera_world::render_scene_to_dir(1, &file).unwrap_err();
        assert!(matches!(error, WorldError::NotADirectory { .. }), "{error}");

        let below_file = file.join("scene");
        let error = tessera_world::render_scene_to_dir(1, &below_file).unwrap_err();
        let WorldError::Io { action, path, .. } = &error else {
            panic!("expected an I/O error, got {error}")
        };
        assert_eq!(
            (*action, path.as_path()),
            ("create directory", below_file.as_path())
        );
        assert!(error.to_string().contains("a-file/scene"), "{error}");

        let options = DatasetOptions {
            count: 2,
            first_seed: 0,
            out: below_file,
            threads: 1,
        };
        assert!(matches!(
            tessera_world::write_dataset(&options, &|_, _| {}),
            Err(WorldError::Io { .. })
        ));
    }

    #[test]
    fn seeds_out_of_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = tessera_world::render_scene_to_dir(MAX_SEED + 1, dir.path()).unwrap_err();
        assert!(
            matches!(error, WorldError::SeedOutOfRange { seed, max } if seed == MAX_SEED + 1 && max == MAX_SEED)
        );
        assert!(tessera_world::generate_scene(u64::MAX).is_err());
        let options = DatasetOptions {
            count: 10,
            first_seed: MAX_SEED - 3,
            out: dir.path().join("d"),
            threads: 1,
        };
        let error = tessera_world::write_dataset(&options, &|_, _| {}).unwrap_err();
        assert!(
            matches!(error, WorldError::SeedRangeOverflow { .. }),
            "{error}"
        );
        assert!(matches!(
            tessera_world::parse_seed("-3"),
            Err(WorldError::InvalidSeed { .. })
        ));
    }

    #[test]
    fn opening_a_missing_dataset_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = tessera_world::Dataset::open(dir.path()).err().unwrap();
        assert!(error.to_string().contains("dataset.json"), "{error}");
    }
}

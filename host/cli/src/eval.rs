//! `tessera eval shapes`: a model (with its tokenizers and the plugins) on shapes-world scenes it
//! was not trained on, through the tasks of the built-in workflows, each metric beside a trivial
//! baseline from training scenes; the exit status is 1 when any metric does not beat its baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tessera_engine::{Engine, EngineConfig, InputValue, StepValue};
use tessera_eval::metrics::{
    LabelledBox, depth_abs_rel, matched_boxes, mean_iou, normal_angle_degrees, normals_from_rgb,
    psnr,
};
use tessera_eval::{Direction, Priors, Report, Row, baseline::labelled_boxes};
use tessera_runtime::types::{Tokens, Value};
use tessera_workflow::{ExecuteOptions, NoCache, RunEvent, execute, plan, validate_source};
use tessera_world::SceneModalities;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Evaluate a model on unseen shapes-world scenes against trivial baselines.
    Shapes(ShapesArgs),
}

#[derive(Args)]
pub struct ShapesArgs {
    /// The 4M checkpoint (directory with config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// An image tokenizer as DOMAIN=DIR, offered to its plugin. Repeatable.
    #[arg(long = "tokenizer", value_name = "DOMAIN=DIR", value_parser = tessera_nn::parse_tokenizer_arg)]
    tokenizers: Vec<(String, PathBuf)>,
    /// The text vocabulary for the text plugins (defaults to their manifests').
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Scenes to evaluate on.
    #[arg(long, default_value_t = 200)]
    scenes: u64,
    /// Seed of the first evaluation scene. Training uses seeds from 0 up, so the default is far
    /// beyond any training set.
    #[arg(long, default_value_t = 1_000_000_000)]
    first_seed: u64,
    /// Training scenes (seeds 0..N) the baselines' statistics come from.
    #[arg(long, default_value_t = 200)]
    baseline_scenes: u64,
    /// Where the report (report.txt, report.json) and each scene's outputs go.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: EvalCommand, plugins_dir: &Path) -> Result<ExitCode> {
    match command {
        EvalCommand::Shapes(args) => shapes(args, plugins_dir),
    }
}

/// One evaluated task: its name, the step that runs it, the metric and its baseline.
struct Task {
    name: &'static str,
    input: &'static str,
    target: &'static str,
    metric: &'static str,
    baseline: &'static str,
    direction: Direction,
}

const TASKS: [Task; 5] = [
    Task {
        name: "rgb -> depth",
        input: "image",
        target: "tok_depth@224",
        metric: "abs rel (scale and shift aligned)",
        baseline: "mean training depth",
        direction: Direction::LowerIsBetter,
    },
    Task {
        name: "rgb -> normal",
        input: "image",
        target: "tok_normal@224",
        metric: "mean angle (degrees)",
        baseline: "mean training normal",
        direction: Direction::LowerIsBetter,
    },
    Task {
        name: "rgb -> semseg",
        input: "image",
        target: "tok_semseg@224",
        metric: "mIoU",
        baseline: "per-pixel majority class",
        direction: Direction::HigherIsBetter,
    },
    Task {
        name: "rgb -> det",
        input: "image",
        target: "det",
        metric: "box recall at IoU 0.5",
        baseline: "each class at its mean box",
        direction: Direction::HigherIsBetter,
    },
    Task {
        name: "caption -> det",
        input: "caption",
        target: "det",
        metric: "box recall at IoU 0.5",
        baseline: "each class at its mean box",
        direction: Direction::HigherIsBetter,
    },
];

fn step_id(task: &Task) -> String {
    format!(
        "{}_{}",
        task.input,
        task.target
            .replace(['@', '.'], "_")
            .trim_start_matches("tok_")
    )
}

/// The workflow of the tasks the model and plugins can run: dense targets in one ROAR step at
/// argmax (as the rgb-to-all workflow), sequences autoregressively at argmax.
fn workflow_toml(tasks: &[&Task]) -> String {
    let mut text = String::from(
        "workflow_version = 1\n[workflow]\nname = \"eval-shapes\"\n\
         [inputs.image]\ndomain = \"tok_rgb@224\"\n[inputs.caption]\ndomain = \"caption\"\n",
    );
    for task in tasks {
        let scheme = if task.target == "det" {
            "scheme = \"autoregressive\"\n"
        } else {
            "scheme = \"roar\"\ndecoding_steps = 1\n"
        };
        text += &format!(
            "[[steps]]\nid = \"{}\"\ngenerate = \"{}\"\nfrom = [\"inputs.{}\"]\n{scheme}temperature = 0.0\n",
            step_id(task),
            task.target,
            task.input
        );
    }
    text += "[outputs]\n";
    for task in tasks {
        text += &format!("{0} = \"steps.{0}\"\n", step_id(task));
    }
    text
}

fn read_png(path: &Path) -> Result<(png::ColorType, png::BitDepth, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .with_context(|| format!("decoding {}", path.display()))?;
    buf.truncate(frame.buffer_size());
    Ok((frame.color_type, frame.bit_depth, buf))
}

fn png_bytes_to_depth(samples: &[u8]) -> Vec<f32> {
    samples
        .chunks_exact(2)
        .map(|c| f32::from(u16::from_be_bytes([c[0], c[1]])))
        .collect()
}

fn truth_normals(scene: &SceneModalities) -> Vec<[f64; 3]> {
    scene
        .images
        .normals
        .chunks_exact(3)
        .map(|n| [f64::from(n[0]), f64::from(n[1]), f64::from(n[2])])
        .collect()
}

fn predicted_boxes(json: &str) -> Result<Vec<LabelledBox>> {
    let boxes: Vec<tessera_text::DetectionBox> =
        serde_json::from_str(json).context("reading the generated boxes")?;
    Ok(boxes
        .into_iter()
        .map(|b| LabelledBox::new(b.label, [b.xmin, b.ymin, b.xmax, b.ymax]))
        .collect())
}

/// The model's value and the baseline's for one task on one scene.
fn score(
    task: &Task,
    scene: &SceneModalities,
    priors: &Priors,
    files: &[PathBuf],
) -> Result<(f64, f64)> {
    let file = |name: &str| {
        files
            .iter()
            .find(|p| p.file_stem().is_some_and(|s| s == name))
            .with_context(|| format!("{}: no `{name}` artifact among {files:?}", task.name))
    };
    let images = &scene.images;
    Ok(match task.target {
        "tok_depth@224" => {
            let (_, _, samples) = read_png(file("depth")?)?;
            (
                depth_abs_rel(&png_bytes_to_depth(&samples), &images.depth_metres)?,
                depth_abs_rel(&priors.mean_depth, &images.depth_metres)?,
            )
        }
        "tok_normal@224" => {
            let (_, _, samples) = read_png(file("normal")?)?;
            let truth = truth_normals(scene);
            (
                normal_angle_degrees(&normals_from_rgb(&samples), &truth)?,
                normal_angle_degrees(&priors.mean_normal, &truth)?,
            )
        }
        "tok_semseg@224" => {
            let (_, _, ids) = read_png(file("segmentation")?)?;
            (
                mean_iou(&ids, &images.semseg)?,
                mean_iou(&priors.majority_class, &images.semseg)?,
            )
        }
        "det" => {
            let json = std::fs::read_to_string(file("boxes")?)?;
            let truth = labelled_boxes(scene);
            let recall = |predicted: &[LabelledBox]| {
                if truth.is_empty() {
                    1.0
                } else {
                    matched_boxes(predicted, &truth, 0.5) as f64 / truth.len() as f64
                }
            };
            (recall(&predicted_boxes(&json)?), recall(&priors.mean_boxes))
        }
        other => bail!("no metric for {other}"),
    })
}

/// Tokenizer reconstruction through the plugin: tokenize the true image, detokenize, compare.
fn reconstruction(
    engine: &Engine,
    domain: &str,
    scene_dir: &Path,
    scene: &SceneModalities,
    priors: &Priors,
) -> Result<Option<(f64, f64)>> {
    let Some(plugin) = engine.plugin_for(domain) else {
        return Ok(None);
    };
    let (file, artifact) = match domain {
        "tok_rgb@224" => ("rgb.png", "image"),
        "tok_depth@224" => ("depth.png", "depth"),
        "tok_normal@224" => ("normal.png", "normal"),
        "tok_semseg@224" => ("semseg.png", "segmentation"),
        _ => return Ok(None),
    };
    let bytes = std::fs::read(scene_dir.join(file))?;
    let value = Value::Image(tessera_runtime::types::Image {
        mime: "image/png".into(),
        data: bytes,
    });
    let tokens: Tokens = plugin.tokenize(domain, &value, &Vec::new())?;
    let out = plugin.detokenize(&tokens, &Vec::new())?;
    let Some(Value::Image(image)) = out
        .artifacts
        .iter()
        .find(|a| a.name == artifact)
        .map(|a| a.value.clone())
    else {
        bail!("{domain}: the plugin returned no `{artifact}` image");
    };
    let path = scene_dir.join(format!("reconstructed-{file}"));
    std::fs::write(&path, &image.data)?;
    let (_, _, samples) = read_png(&path)?;
    let images = &scene.images;
    Ok(Some(match domain {
        "tok_rgb@224" => (
            psnr(&samples, &images.rgb)?,
            psnr(&priors.mean_rgb, &images.rgb)?,
        ),
        "tok_depth@224" => (
            depth_abs_rel(&png_bytes_to_depth(&samples), &images.depth_metres)?,
            depth_abs_rel(&priors.mean_depth, &images.depth_metres)?,
        ),
        "tok_normal@224" => {
            let truth = truth_normals(scene);
            (
                normal_angle_degrees(&normals_from_rgb(&samples), &truth)?,
                normal_angle_degrees(&priors.mean_normal, &truth)?,
            )
        }
        _ => (
            mean_iou(&samples, &images.semseg)?,
            mean_iou(&priors.majority_class, &images.semseg)?,
        ),
    }))
}

fn shapes(args: ShapesArgs, plugins_dir: &Path) -> Result<ExitCode> {
    if args.scenes == 0 || args.baseline_scenes == 0 {
        bail!("--scenes and --baseline-scenes must be at least 1");
    }
    if args.first_seed < args.baseline_scenes {
        bail!(
            "--first-seed {} overlaps the baseline's training scenes 0..{}",
            args.first_seed,
            args.baseline_scenes
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut asset_overrides = BTreeMap::new();
    if let Some(vocab) = &args.vocab {
        asset_overrides.insert("vocab".to_owned(), vocab.clone());
    }
    let engine = Engine::load(&EngineConfig {
        model: args.model.clone(),
        plugins_dir: plugins_dir.to_path_buf(),
        out_dir: args.out.clone(),
        asset_overrides,
        tokenizers: args.tokenizers.iter().cloned().collect(),
    })
    .context("loading the model and plugins")?;
    let config = engine.model().config();
    let served = engine.served_domains();
    let usable =
        |domain: &str, list: &[String]| list.iter().any(|d| d == domain) && served.contains(domain);
    let tasks: Vec<&Task> = TASKS
        .iter()
        .filter(|t| {
            let input = if t.input == "image" {
                "tok_rgb@224"
            } else {
                "caption"
            };
            usable(input, &config.domains_in) && usable(t.target, &config.domains_out)
        })
        .collect();
    for task in TASKS
        .iter()
        .filter(|t| !tasks.iter().any(|u| u.name == t.name))
    {
        eprintln!(
            "skipping {}: the model or the plugins do not serve its domains",
            task.name
        );
    }
    let reconstructed: Vec<&str> = [
        "tok_rgb@224",
        "tok_depth@224",
        "tok_normal@224",
        "tok_semseg@224",
    ]
    .into_iter()
    .filter(|d| served.contains(*d) && args.tokenizers.iter().any(|(t, _)| t == d))
    .collect();
    if tasks.is_empty() && reconstructed.is_empty() {
        bail!("the model and plugins serve none of the evaluated tasks");
    }

    eprintln!("baselines from {} training scenes", args.baseline_scenes);
    let priors = Priors::from_seeds(0..args.baseline_scenes).context("computing the baselines")?;
    let source = workflow_toml(&tasks);
    let report = validate_source("eval-shapes.toml", &source, &Default::default());
    let workflow = report
        .workflow
        .clone()
        .with_context(|| report.render_terminal(false))?;
    let execution = plan(&workflow, None).context("planning the evaluation workflow")?;

    let mut sums: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    let mut add = |key: String, (value, baseline): (f64, f64)| {
        let entry = sums.entry(key).or_insert((0.0, 0.0, 0));
        entry.0 += value;
        entry.1 += baseline;
        entry.2 += 1;
    };
    for index in 0..args.scenes {
        let seed = args.first_seed + index;
        let scene_dir = args.out.join(format!("scene-{seed}"));
        let scene = tessera_world::generate_scene(seed)?;
        tessera_world::render_scene_to_dir(seed, &scene_dir)?;
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "image".to_owned(),
            StepValue::input(
                "tok_rgb@224",
                InputValue::from_arg(&format!("@{}", scene_dir.join("rgb.png").display()))?,
            ),
        );
        inputs.insert(
            "caption".to_owned(),
            StepValue::input("caption", InputValue::Text(scene.caption.clone())),
        );
        let runner = engine.run_in(scene_dir.join("generated"));
        let options = ExecuteOptions {
            max_concurrency: 1,
            cache_context: engine.cache_context(&inputs, seed, true),
            cancel: Default::default(),
        };
        let run = execute(
            &execution,
            &runner,
            &inputs,
            &NoCache,
            &options,
            &|_: RunEvent| {},
        )
        .with_context(|| format!("scene {seed}"))?;
        for task in &tasks {
            let Some(produced) = run.outputs.get(&step_id(task)).and_then(|v| v.produced()) else {
                bail!(
                    "scene {seed}: {} produced nothing ({:?})",
                    task.name,
                    run.outcomes.get(&step_id(task))
                );
            };
            let files: Vec<PathBuf> = produced.artifacts.iter().map(|a| a.path.clone()).collect();
            add(task.name.to_owned(), score(task, &scene, &priors, &files)?);
        }
        for domain in &reconstructed {
            if let Some(pair) = reconstruction(&engine, domain, &scene_dir, &scene, &priors)? {
                add(format!("{domain} reconstruction"), pair);
            }
        }
        eprintln!("scene {}/{} (seed {seed}) done", index + 1, args.scenes);
    }

    let mut table = Report::default();
    for task in &tasks {
        let (value, baseline, n) = sums[task.name];
        table.push(Row {
            task: task.name.into(),
            metric: task.metric.into(),
            value: value / n as f64,
            baseline_name: task.baseline.into(),
            baseline: baseline / n as f64,
            direction: task.direction,
            scenes: n,
        });
    }
    for domain in &reconstructed {
        let key = format!("{domain} reconstruction");
        let Some(&(value, baseline, n)) = sums.get(&key) else {
            continue;
        };
        let (metric, name, direction) = match *domain {
            "tok_rgb@224" => (
                "PSNR (dB)",
                "mean training image",
                Direction::HigherIsBetter,
            ),
            "tok_depth@224" => ("abs rel", "mean training depth", Direction::LowerIsBetter),
            "tok_normal@224" => (
                "mean angle (degrees)",
                "mean training normal",
                Direction::LowerIsBetter,
            ),
            _ => (
                "mIoU",
                "per-pixel majority class",
                Direction::HigherIsBetter,
            ),
        };
        table.push(Row {
            task: key,
            metric: metric.into(),
            value: value / n as f64,
            baseline_name: name.into(),
            baseline: baseline / n as f64,
            direction,
            scenes: n,
        });
    }
    let text = table.render_table();
    print!("{text}");
    std::fs::write(args.out.join("report.txt"), &text)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&table)?,
    )?;
    if table.passes() {
        println!("every metric beats its baseline");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("some metrics do not beat their baselines (see FAILS above)");
        Ok(ExitCode::from(1))
    }
}

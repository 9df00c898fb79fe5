//! `tessera eval shapes`: a model (with its tokenizers and the plugins) on shapes-world scenes it
//! was not trained on, through the tasks of the built-in workflows, each metric beside a trivial
//! baseline from training scenes; the exit status is 1 when any metric does not beat its baseline
//! clearly (on at least 97.5 % of bootstrap resamples of the scenes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::model_choice::ModelChoice;
use crate::workflows::default_workflows_dir;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tessera_engine::{Engine, EngineConfig, InputValue, StepValue};
use tessera_eval::caption_checks::{
    colour_agreement, relation_accuracy, shape_recall, stated_objects,
};
use tessera_eval::metrics::{
    LabelledBox, class_overlap, depth_abs_rel, matched_boxes, normal_angle_degrees,
    normals_from_rgb, psnr,
};
use tessera_eval::{
    Direction, Priors, Report, Row, SceneScore, SceneScores, baseline::labelled_boxes,
};
use tessera_runtime::types::{Tokens, Value};
use tessera_workflow::{
    ExecuteOptions, NoCache, RunEvent, StepGuidance, Workflow, execute, plan, validate_file,
    validate_source,
};
use tessera_world::sheet::{SheetRow, write_sheet};
use tessera_world::{BoundingBox, SceneModalities};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Evaluate a model on unseen shapes-world scenes against trivial baselines.
    Shapes(ShapesArgs),
}

#[derive(Args)]
pub struct ShapesArgs {
    #[command(flatten)]
    model: ModelChoice,
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
    /// Scenes shown in the contact sheet (contact-sheet.png): the input and what each task made.
    #[arg(long, default_value_t = 6)]
    sheet_scenes: u64,
    /// Evaluate only these (repeat the flag): a task as `rgb-depth`, `rgb-normal`, `rgb-semseg`,
    /// `rgb-det`, `caption-det`, `caption-rgb`, or `reconstruction` for the tokenizers'
    /// reconstruction rows. Every one when not given. The exit status then judges only these.
    #[arg(long = "task", value_name = "TASK")]
    tasks: Vec<String>,
    /// Where the report (report.txt, report.json, contact-sheet.png) and each scene's outputs go.
    #[arg(long)]
    out: PathBuf,
}

/// What `--task` names the tokenizers' reconstruction rows.
const RECONSTRUCTION: &str = "reconstruction";

/// Which tasks, and whether the reconstruction rows, a `--task` list selects.
fn selected_tasks(names: &[String]) -> Result<(Vec<&'static Task>, bool)> {
    if names.is_empty() {
        return Ok((TASKS.iter().collect(), true));
    }
    let mut tasks = Vec::new();
    let mut reconstruction = false;
    for name in names {
        if name == RECONSTRUCTION {
            reconstruction = true;
            continue;
        }
        let Some(task) = TASKS.iter().find(|t| t.slug() == *name) else {
            let known: Vec<String> = TASKS
                .iter()
                .map(Task::slug)
                .chain([RECONSTRUCTION.to_owned()])
                .collect();
            bail!("--task {name}: no such task (known: {})", known.join(", "));
        };
        if !tasks.iter().any(|t: &&Task| t.name == task.name) {
            tasks.push(task);
        }
    }
    Ok((tasks, reconstruction))
}

pub fn run(command: EvalCommand, plugins_dir: &Path) -> Result<ExitCode> {
    match command {
        EvalCommand::Shapes(args) => shapes(args, plugins_dir),
    }
}

/// One evaluated task: its name, the step that runs it, and what is measured on its output.
struct Task {
    name: &'static str,
    input: &'static str,
    target: &'static str,
    /// The built-in workflow (under `workflows/`) whose step for `target` sets how this task is
    /// sampled.
    workflow: &'static str,
    metrics: &'static [Metric],
}

const FROM_IMAGE: &str = "rgb-to-all.toml";
const FROM_CAPTION: &str = "caption-to-all.toml";
/// Segmentation benchmarks pool each class's intersection and union over the whole test set; a
/// per-image mean would count a class an image lacks as a zero whenever it is predicted there.
const SEMSEG_MIOU: &str = "mIoU (pooled over scenes)";

/// One row of the report: a metric of a task beside its baseline.
struct Metric {
    /// Shown after the task's name (empty for the task's main metric).
    aspect: &'static str,
    metric: &'static str,
    baseline: &'static str,
    direction: Direction,
}

const fn metric(
    aspect: &'static str,
    metric: &'static str,
    baseline: &'static str,
    direction: Direction,
) -> Metric {
    Metric {
        aspect,
        metric,
        baseline,
        direction,
    }
}

const BOX_RECALL: Metric = metric(
    "",
    "box recall at IoU 0.5",
    "each class at its mean box",
    Direction::HigherIsBetter,
);

const TASKS: [Task; 6] = [
    Task {
        name: "rgb -> depth",
        input: "image",
        target: "tok_depth@224",
        workflow: FROM_IMAGE,
        metrics: &[metric(
            "",
            "abs rel (scale and shift aligned)",
            "mean training depth",
            Direction::LowerIsBetter,
        )],
    },
    Task {
        name: "rgb -> normal",
        input: "image",
        target: "tok_normal@224",
        workflow: FROM_IMAGE,
        metrics: &[metric(
            "",
            "mean angle (degrees)",
            "mean training normal",
            Direction::LowerIsBetter,
        )],
    },
    Task {
        name: "rgb -> semseg",
        input: "image",
        target: "tok_semseg@224",
        workflow: FROM_IMAGE,
        metrics: &[metric(
            "",
            SEMSEG_MIOU,
            "per-pixel majority class",
            Direction::HigherIsBetter,
        )],
    },
    Task {
        name: "rgb -> det",
        input: "image",
        target: "det",
        workflow: FROM_IMAGE,
        metrics: &[BOX_RECALL],
    },
    Task {
        name: "caption -> det",
        input: "caption",
        target: "det",
        workflow: FROM_CAPTION,
        metrics: &[
            BOX_RECALL,
            metric(
                "stated shapes",
                "stated objects with a box of their shape",
                "one box per class",
                Direction::HigherIsBetter,
            ),
            metric(
                "own caption",
                "stated objects with a box of their shape",
                "the same boxes for training captions",
                Direction::HigherIsBetter,
            ),
            metric(
                "relations",
                "stated left/right relations that hold",
                "one box per class",
                Direction::HigherIsBetter,
            ),
        ],
    },
    Task {
        name: "caption -> rgb",
        input: "caption",
        target: "tok_rgb@224",
        workflow: FROM_CAPTION,
        metrics: &[
            metric(
                "stated colours",
                "F1 of stated vs present colours (4x4 blocks of a hue)",
                "a training image of another scene",
                Direction::HigherIsBetter,
            ),
            metric(
                "own caption",
                "F1 of stated vs present colours (4x4 blocks of a hue)",
                "the same image for training captions",
                Direction::HigherIsBetter,
            ),
        ],
    },
];

impl Task {
    /// The task's name on the command line: `rgb -> depth` is `rgb-depth`.
    fn slug(&self) -> String {
        self.name.replace(" -> ", "-")
    }
}

impl Metric {
    fn row(&self, task: &Task) -> String {
        if self.aspect.is_empty() {
            task.name.to_owned()
        } else {
            format!("{}: {}", task.name, self.aspect)
        }
    }
}

fn step_id(task: &Task) -> String {
    format!(
        "{}_{}",
        task.input,
        task.target
            .replace(['@', '.'], "_")
            .trim_start_matches("tok_")
    )
}

/// The workflow of the tasks the model and plugins can run, each step sampled as the built-in
/// workflow for its task does (read from `workflows`, so the two cannot drift apart).
fn eval_workflow(tasks: &[&Task], workflows: &Path) -> Result<Workflow> {
    // The steps' own sampling is replaced below; the file only fixes ids, inputs and outputs.
    let mut text = String::from(
        "workflow_version = 1\n[workflow]\nname = \"eval-shapes\"\n\
         [inputs.image]\ndomain = \"tok_rgb@224\"\n[inputs.caption]\ndomain = \"caption\"\n",
    );
    for task in tasks {
        text += &format!(
            "[[steps]]\nid = \"{}\"\ngenerate = \"{}\"\nfrom = [\"inputs.{}\"]\n\
             scheme = \"autoregressive\"\n",
            step_id(task),
            task.target,
            task.input,
        );
    }
    text += "[outputs]\n";
    for task in tasks {
        text += &format!("{0} = \"steps.{0}\"\n", step_id(task));
    }
    let report = validate_source("eval-shapes.toml", &text, &Default::default());
    let mut workflow = report
        .workflow
        .clone()
        .with_context(|| report.render_terminal(false))?;
    let mut built_in = BTreeMap::new();
    for (step, task) in workflow.steps.iter_mut().zip(tasks) {
        if !built_in.contains_key(task.workflow) {
            let path = workflows.join(task.workflow);
            let report = validate_file(&path, &Default::default())
                .with_context(|| format!("reading the built-in workflow {}", path.display()))?;
            let parsed = report.workflow.clone().with_context(|| {
                format!(
                    "the built-in workflow {} is not valid:\n{}",
                    path.display(),
                    report.render_terminal(false)
                )
            })?;
            built_in.insert(task.workflow, parsed);
        }
        let source = &built_in[task.workflow];
        let Some(model_step) = source.steps.iter().find(|s| s.generate == task.target) else {
            bail!("{} has no step generating {}", task.workflow, task.target);
        };
        if !matches!(model_step.parameters.guidance, StepGuidance::Scale(_)) {
            bail!(
                "{}'s step `{}` uses weighted guidance, which the evaluation cannot copy",
                task.workflow,
                model_step.id
            );
        }
        step.parameters = model_step.parameters.clone();
    }
    Ok(workflow)
}

/// A PNG's samples as stored.
fn read_png(path: &Path) -> Result<(png::ColorType, png::BitDepth, Vec<u8>)> {
    read_png_as(path, png::Transformations::IDENTITY)
}

fn read_png_as(
    path: &Path,
    transformations: png::Transformations,
) -> Result<(png::ColorType, png::BitDepth, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(transformations);
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

/// The model's value and the baseline's for each of a task's metrics on one scene (`None`: the
/// metric does not apply to this scene, e.g. relations in a scene that states none).
fn score(
    task: &Task,
    scene: &SceneModalities,
    priors: &Priors,
    files: &[PathBuf],
) -> Result<Vec<Option<SceneScore>>> {
    let file = |name: &str| {
        files
            .iter()
            .find(|p| p.file_stem().is_some_and(|s| s == name))
            .with_context(|| format!("{}: no `{name}` artifact among {files:?}", task.name))
    };
    let images = &scene.images;
    let stated = stated_objects(scene);
    Ok(match task.target {
        "tok_rgb@224" => {
            let (colour, _, samples) = read_png(file("image")?)?;
            if colour != png::ColorType::Rgb || samples.len() != images.rgb.len() {
                bail!(
                    "{}: the generated image is not a 224 x 224 RGB PNG",
                    task.name
                );
            }
            // The baseline draws a plausible scene that ignores the caption: each training
            // sample image in turn.
            let baseline: Vec<f64> = priors
                .sample_images
                .iter()
                .filter_map(|image| colour_agreement(&stated, image))
                .collect();
            let baseline = (!baseline.is_empty())
                .then(|| baseline.iter().sum::<f64>() / baseline.len() as f64);
            let own = colour_agreement(&stated, &samples);
            means(vec![
                own.zip(baseline),
                own.zip(mean_over_sample_captions(priors, |other| {
                    colour_agreement(other, &samples)
                })),
            ])
        }
        "tok_depth@224" => {
            let (_, _, samples) = read_png(file("depth")?)?;
            vec![Some(SceneScore::Mean(
                depth_abs_rel(&png_bytes_to_depth(&samples), &images.depth_metres)?,
                depth_abs_rel(&priors.mean_depth, &images.depth_metres)?,
            ))]
        }
        "tok_normal@224" => {
            let (_, _, samples) = read_png(file("normal")?)?;
            let truth = truth_normals(scene);
            vec![Some(SceneScore::Mean(
                normal_angle_degrees(&normals_from_rgb(&samples), &truth)?,
                normal_angle_degrees(&priors.mean_normal, &truth)?,
            ))]
        }
        "tok_semseg@224" => {
            let (_, _, ids) = read_png(file("segmentation")?)?;
            vec![Some(SceneScore::Overlap(
                class_overlap(&ids, &images.semseg)?,
                class_overlap(&priors.majority_class, &images.semseg)?,
            ))]
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
            let predicted = predicted_boxes(&json)?;
            let mut scores = vec![Some((recall(&predicted), recall(&priors.mean_boxes)))];
            if task.input == "caption" {
                let own = shape_recall(&stated, &predicted);
                scores.push(Some((own, shape_recall(&stated, &priors.mean_boxes))));
                scores.push(
                    mean_over_sample_captions(priors, |other| {
                        Some(shape_recall(other, &predicted))
                    })
                    .map(|others| (own, others)),
                );
                scores.push(
                    relation_accuracy(&stated, &predicted)
                        .zip(relation_accuracy(&stated, &priors.mean_boxes)),
                );
            }
            means(scores)
        }
        other => bail!("no metric for {other}"),
    })
}

/// Per-scene `(model, baseline)` values of mean-over-scenes metrics (`None` where a scene has
/// nothing to measure).
fn means(pairs: Vec<Option<(f64, f64)>>) -> Vec<Option<SceneScore>> {
    pairs
        .into_iter()
        .map(|pair| pair.map(|(model, baseline)| SceneScore::Mean(model, baseline)))
        .collect()
}

/// The mean of a caption check of one output against each training scene's stated objects: what
/// an output that ignores its own caption scores as well.
fn mean_over_sample_captions(
    priors: &Priors,
    check: impl Fn(&[&BoundingBox]) -> Option<f64>,
) -> Option<f64> {
    let scores: Vec<f64> = priors
        .sample_stated
        .iter()
        .filter_map(|stated| check(&stated.iter().collect::<Vec<_>>()))
        .collect();
    (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
}

/// The image a task made, as an RGB tile for the contact sheet (boxes have none).
fn sheet_tile(task: &Task, files: &[PathBuf]) -> Result<Option<(String, Vec<u8>)>> {
    let shown = match task.target {
        "tok_rgb@224" => "image",
        "tok_depth@224" => "depth-turbo",
        "tok_normal@224" => "normal",
        "tok_semseg@224" => "segmentation",
        _ => return Ok(None),
    };
    let Some(path) = files
        .iter()
        .find(|p| p.file_stem().is_some_and(|s| s == shown))
    else {
        return Ok(None);
    };
    let (colour, _, buf) = read_png_as(
        path,
        png::Transformations::EXPAND | png::Transformations::STRIP_16,
    )?;
    let rgb = match colour {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        png::ColorType::Indexed => bail!("{} was not expanded to RGB", path.display()),
    };
    // The sheet's font has letters, digits and basic punctuation, no arrows.
    Ok(Some((task.name.replace(" -> ", " to "), rgb)))
}

/// Tokenizer reconstruction through the plugin: tokenize the true image, detokenize, compare.
fn reconstruction(
    engine: &Engine,
    domain: &str,
    scene_dir: &Path,
    scene: &SceneModalities,
    priors: &Priors,
) -> Result<Option<SceneScore>> {
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
        "tok_rgb@224" => SceneScore::Mean(
            psnr(&samples, &images.rgb)?,
            psnr(&priors.mean_rgb, &images.rgb)?,
        ),
        "tok_depth@224" => SceneScore::Mean(
            depth_abs_rel(&png_bytes_to_depth(&samples), &images.depth_metres)?,
            depth_abs_rel(&priors.mean_depth, &images.depth_metres)?,
        ),
        "tok_normal@224" => {
            let truth = truth_normals(scene);
            SceneScore::Mean(
                normal_angle_degrees(&normals_from_rgb(&samples), &truth)?,
                normal_angle_degrees(&priors.mean_normal, &truth)?,
            )
        }
        _ => SceneScore::Overlap(
            class_overlap(&samples, &images.semseg)?,
            class_overlap(&priors.majority_class, &images.semseg)?,
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
    let (selected, with_reconstruction) = selected_tasks(&args.tasks)?;
    let model = args.model.resolve()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut asset_overrides = BTreeMap::new();
    if let Some(vocab) = &args.vocab {
        asset_overrides.insert("vocab".to_owned(), vocab.clone());
    }
    let engine = Engine::load(&EngineConfig {
        model: model.dir.clone(),
        plugins_dir: plugins_dir.to_path_buf(),
        out_dir: args.out.clone(),
        asset_overrides,
        tokenizers: model.tokenizers.clone(),
    })
    .context("loading the model and plugins")?;
    let config = engine.model().config();
    let served = engine.served_domains();
    let usable =
        |domain: &str, list: &[String]| list.iter().any(|d| d == domain) && served.contains(domain);
    let tasks: Vec<&Task> = selected
        .iter()
        .copied()
        .filter(|t| {
            let input = if t.input == "image" {
                "tok_rgb@224"
            } else {
                "caption"
            };
            usable(input, &config.domains_in) && usable(t.target, &config.domains_out)
        })
        .collect();
    for task in selected
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
    .filter(|d| with_reconstruction && served.contains(*d) && model.tokenizers.contains_key(*d))
    .collect();
    if tasks.is_empty() && reconstructed.is_empty() {
        bail!("the model and plugins serve none of the evaluated tasks");
    }

    eprintln!("baselines from {} training scenes", args.baseline_scenes);
    let priors = Priors::from_seeds(0..args.baseline_scenes).context("computing the baselines")?;
    let workflow = eval_workflow(&tasks, &default_workflows_dir())?;
    let execution = plan(&workflow, None).context("planning the evaluation workflow")?;

    let mut evidence: BTreeMap<String, SceneScores> = BTreeMap::new();
    let mut add = |key: String, score: SceneScore| -> Result<()> {
        match evidence.get_mut(&key) {
            Some(scores) => scores.push(score).with_context(|| key.clone())?,
            None => {
                evidence.insert(key, score.into());
            }
        }
        Ok(())
    };
    let mut sheet = Vec::new();
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
        let mut tiles = vec![("input rgb".to_owned(), scene.images.rgb.clone())];
        for task in &tasks {
            let Some(produced) = run.outputs.get(&step_id(task)).and_then(|v| v.produced()) else {
                bail!(
                    "scene {seed}: {} produced nothing ({:?})",
                    task.name,
                    run.outcomes.get(&step_id(task))
                );
            };
            let files: Vec<PathBuf> = produced.artifacts.iter().map(|a| a.path.clone()).collect();
            if index < args.sheet_scenes {
                tiles.extend(sheet_tile(task, &files)?);
            }
            let scores = score(task, &scene, &priors, &files)?;
            for (metric, score) in task.metrics.iter().zip(scores) {
                if let Some(score) = score {
                    add(metric.row(task), score)?;
                }
            }
        }
        for domain in &reconstructed {
            if let Some(score) = reconstruction(&engine, domain, &scene_dir, &scene, &priors)? {
                add(format!("{domain} reconstruction"), score)?;
            }
        }
        if index < args.sheet_scenes {
            sheet.push(SheetRow {
                title: format!("seed {seed}: {}", scene.caption),
                tiles,
            });
        }
        eprintln!("scene {}/{} (seed {seed}) done", index + 1, args.scenes);
    }

    let mut table = Report::default();
    for task in &tasks {
        for metric in task.metrics {
            let row = evidence.get(&metric.row(task)).and_then(|scores| {
                Row::measured(
                    metric.row(task),
                    metric.metric,
                    metric.baseline,
                    metric.direction,
                    scores,
                )
            });
            match row {
                Some(row) => table.push(row),
                None => eprintln!("{}: no scene to measure it on", metric.row(task)),
            }
        }
    }
    for domain in &reconstructed {
        let key = format!("{domain} reconstruction");
        let Some(scores) = evidence.get(&key) else {
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
                SEMSEG_MIOU,
                "per-pixel majority class",
                Direction::HigherIsBetter,
            ),
        };
        table.extend(Row::measured(key, metric, name, direction, scores));
    }
    let sheet_path = args.out.join("contact-sheet.png");
    write_sheet(&sheet, &sheet_path).context("writing the contact sheet")?;
    let text = table.render_table();
    print!("{text}");
    println!("contact sheet: {}", sheet_path.display());
    std::fs::write(args.out.join("report.txt"), &text)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&table)?,
    )?;
    if table.passes() {
        println!("every metric clearly beats its baseline");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("some metrics do not clearly beat their baselines (see FAILS and UNCLEAR above)");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sampler::Scheme;

    #[test]
    fn each_task_is_sampled_as_its_built_in_workflow_step() {
        let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let tasks: Vec<&Task> = TASKS.iter().collect();
        let workflow = eval_workflow(&tasks, &workflows).unwrap();
        for (step, task) in workflow.steps.iter().zip(&tasks) {
            let text = std::fs::read_to_string(workflows.join(task.workflow)).unwrap();
            let source = validate_source(task.workflow, &text, &Default::default())
                .workflow
                .unwrap();
            let built_in = source
                .steps
                .iter()
                .find(|s| s.generate == task.target)
                .unwrap();
            assert_eq!(step.parameters, built_in.parameters, "{}", task.name);
            assert_eq!(step.generate, task.target);
        }
        let caption_to_rgb = &workflow.steps[5].parameters;
        assert_eq!(caption_to_rgb.scheme, Scheme::Roar);
        assert_eq!(caption_to_rgb.decoding_steps, 25);
        assert_eq!(caption_to_rgb.guidance, StepGuidance::Scale(2.0));
        assert_eq!(
            workflow.steps[3].parameters.temperature, 0.0,
            "rgb -> det is argmax"
        );
    }

    #[test]
    fn a_task_list_selects_tasks_and_reconstruction() {
        let (all, reconstruction) = selected_tasks(&[]).unwrap();
        assert_eq!(all.len(), TASKS.len());
        assert!(reconstruction);

        let names = ["caption-det", "rgb-depth", "caption-det"].map(String::from);
        let (tasks, reconstruction) = selected_tasks(&names).unwrap();
        let picked: Vec<&str> = tasks.iter().map(|t| t.name).collect();
        assert_eq!(picked, ["caption -> det", "rgb -> depth"]);
        assert!(!reconstruction);

        let (tasks, reconstruction) = selected_tasks(&[RECONSTRUCTION.to_owned()]).unwrap();
        assert!(tasks.is_empty());
        assert!(reconstruction);
    }

    #[test]
    fn an_unknown_task_is_refused_with_the_known_ones() {
        let Err(err) = selected_tasks(&["rgb-edges".to_owned()]) else {
            panic!("an unknown task was accepted");
        };
        let message = format!("{err:#}");
        assert!(
            message.contains("--task rgb-edges: no such task"),
            "{message}"
        );
        assert!(message.contains("caption-rgb, reconstruction"), "{message}");
    }

    #[test]
    fn a_missing_built_in_workflow_is_named() {
        let tasks: Vec<&Task> = TASKS.iter().collect();
        let err = eval_workflow(&tasks, Path::new("/nonexistent")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/rgb-to-all.toml"),
            "{err:#}"
        );
    }
}

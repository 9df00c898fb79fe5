//! `cargo xtask default-model`: the recipe of tessera's own model, run end to end with the
//! release `tessera` binary: one image tokenizer per image domain, the core over those and the
//! shapes world's sequence domains, the f16 export into `assets/model/`, the evaluation on unseen
//! scenes, and the model card with the measured times and numbers.
//!
//! Every stage is a `tessera` command with the recipe's fixed seeds; a stage whose output exists
//! is skipped and an interrupted one resumes from its last checkpoint, so rerunning the command
//! after a stop continues where it stopped. Each tokenizer is converted into the export folder
//! as soon as it is trained, with its time beside it: the core learns the tokens of the
//! tokenizers as shipped, and a checkout that holds the tokenizers starts the recipe at the core.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `recipes/default-model/recipe.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    tokenizers: TokenizerStage,
    core: CoreStage,
    export: ExportStage,
    eval: EvalStage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizerStage {
    /// Shapes-world scenes rendered for each tokenizer, from `first_seed`.
    scenes: usize,
    first_seed: u64,
    /// Domain -> training config (relative to the recipe).
    configs: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoreStage {
    config: PathBuf,
    scenes: usize,
    first_seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportStage {
    dtype: String,
    /// Where the exported model goes (relative to the repository).
    out: PathBuf,
    /// Refuse an export larger than this.
    max_megabytes: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalStage {
    scenes: u64,
}

/// Options of the task: where runs go, and a different recipe for trying variants.
pub struct Options {
    pub recipe: PathBuf,
    pub work: PathBuf,
}

impl Options {
    pub fn parse(root: &Path, args: &[String]) -> Result<Self> {
        let mut options = Options {
            recipe: root.join("recipes/default-model/recipe.toml"),
            work: root.join("runs/default-model"),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--recipe" => {
                    options.recipe = PathBuf::from(args.next().context("--recipe needs a path")?)
                }
                "--work" => {
                    options.work = PathBuf::from(args.next().context("--work needs a path")?)
                }
                other => bail!("unknown option {other} (--recipe PATH, --work DIR)"),
            }
        }
        Ok(options)
    }
}

/// One finished stage and how long it took. Kept beside the stage's output as
/// [`STAGE_TIME_FILE`], so an invocation that skips the stage still reports what it cost.
#[derive(Debug, Serialize, Deserialize)]
struct StageTime {
    name: String,
    seconds: f64,
    /// Processor time of the stage's commands (user + system, all threads): unlike `seconds`,
    /// barely moved by other work competing for the machine.
    #[serde(default)]
    cpu_seconds: Option<f64>,
    /// Continued from a checkpoint of an interrupted invocation.
    #[serde(default)]
    resumed: bool,
    /// Resumed, and the checkpoint said what the run had spent up to it (its `spent-time.json`),
    /// which `seconds` and `cpu_seconds` include; otherwise a resumed stage's time is only its
    /// last part.
    #[serde(default)]
    earlier_parts_counted: bool,
    /// Measured by an earlier invocation of the recipe.
    #[serde(skip)]
    earlier: bool,
}

const STAGE_TIME_FILE: &str = "stage-time.toml";

pub fn run(root: &Path, tessera: &Path, options: &Options) -> Result<()> {
    let text = std::fs::read_to_string(&options.recipe)
        .with_context(|| format!("reading {}", options.recipe.display()))?;
    let recipe: Recipe =
        toml::from_str(&text).with_context(|| format!("parsing {}", options.recipe.display()))?;
    let recipe_dir = options
        .recipe
        .parent()
        .context("the recipe has no folder")?
        .to_path_buf();
    let work = &options.work;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let mut times = Vec::new();

    let export = root.join(&recipe.export.out);
    let convert = |src: &Path, dst: &Path| {
        crate::run(
            Command::new(tessera)
                .args(["model", "convert"])
                .arg(src)
                .args(["--dtype", &recipe.export.dtype])
                .arg("--out")
                .arg(dst),
        )
    };

    let mut tokenizer_models = BTreeMap::new();
    for (domain, config) in &recipe.tokenizers.configs {
        let out = work.join(format!("tokenizer-{}", short(domain)));
        let shipped = export.join("tokenizers").join(domain);
        times.push(stage(
            &format!("tokenizer {domain}"),
            &out,
            &shipped,
            |resume| {
                let mut cmd = Command::new(tessera);
                cmd.args(["train", "tokenizer", "--domain", domain])
                    .arg("--config")
                    .arg(recipe_dir.join(config))
                    .args(["--scenes", &recipe.tokenizers.scenes.to_string()])
                    .args(["--first-seed", &recipe.tokenizers.first_seed.to_string()])
                    .arg("--out")
                    .arg(&out);
                if resume {
                    cmd.arg("--resume");
                }
                crate::run(&mut cmd)?;
                convert(&out.join("model"), &shipped)
            },
        )?);
        tokenizer_models.insert(domain.clone(), shipped);
    }

    let core_out = work.join("core");
    let core_model = core_out.join("model");
    times.push(stage("core", &core_out, &core_model, |resume| {
        let mut cmd = Command::new(tessera);
        cmd.args(["train", "fm", "--config"])
            .arg(recipe_dir.join(&recipe.core.config))
            .args([
                "--data",
                &format!("world:{}@{}", recipe.core.scenes, recipe.core.first_seed),
            ])
            .arg("--out")
            .arg(&core_out);
        for (domain, model) in &tokenizer_models {
            cmd.args(["--tokenizer", &format!("{domain}={}", model.display())]);
        }
        if resume {
            cmd.arg("--resume");
        }
        crate::run(&mut cmd)
    })?);

    let (exported, time) = measure(&format!("export ({})", recipe.export.dtype), || {
        export_core(&convert, &core_model, work, &export)
    });
    exported?;
    times.push(time);
    let megabytes = folder_bytes(&export)? as f64 / 1e6;
    if megabytes > recipe.export.max_megabytes {
        bail!(
            "the exported model is {megabytes:.1} MB, over the recipe's {} MB",
            recipe.export.max_megabytes
        );
    }

    let eval_out = work.join("eval");
    let (status, time) = measure(&format!("eval ({} scenes)", recipe.eval.scenes), || {
        Command::new(tessera)
            .args(["eval", "shapes", "--model"])
            .arg(&export)
            .args(["--scenes", &recipe.eval.scenes.to_string()])
            .arg("--out")
            .arg(&eval_out)
            .status()
            .context("starting tessera eval shapes")
    });
    let status = status?;
    times.push(time);
    let report = std::fs::read_to_string(eval_out.join("report.txt"))
        .with_context(|| format!("reading the evaluation report in {}", eval_out.display()))?;

    let card = model_card(&recipe_dir, &times, &report, megabytes, &text)?;
    std::fs::write(export.join("README.md"), card).context("writing the model card")?;
    println!(
        "xtask: default model in {} ({megabytes:.1} MB)",
        export.display()
    );
    print!("{report}");
    if !status.success() {
        bail!(
            "the default model does not beat every baseline ({status}); see {}",
            eval_out.display()
        );
    }
    Ok(())
}

/// `tok_rgb@224` -> `rgb`.
fn short(domain: &str) -> &str {
    let name = domain.strip_prefix("tok_").unwrap_or(domain);
    name.split('@').next().unwrap_or(name)
}

/// Runs `body` unless the stage's output `done` exists, timing it; the time is kept inside
/// `done` as [`STAGE_TIME_FILE`]. `body` is told to resume when the stage's training folder
/// `out` holds a complete checkpoint.
fn stage(
    name: &str,
    out: &Path,
    done: &Path,
    body: impl FnOnce(bool) -> Result<()>,
) -> Result<StageTime> {
    let time_file = done.join(STAGE_TIME_FILE);
    if done.join("config.json").is_file() {
        println!("xtask: {name}: done before ({}), skipped", done.display());
        let mut time: StageTime = match std::fs::read_to_string(&time_file) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("parsing {}", time_file.display()))?
            }
            Err(_) => bail!(
                "{} is done but {} is missing, so the recipe's time is unknown; \
                 remove {} to run the stage again",
                done.display(),
                time_file.display(),
                done.display()
            ),
        };
        time.earlier = true;
        return Ok(time);
    }
    let resume_from = newest_complete_checkpoint(out);
    let earlier = match &resume_from {
        Some(checkpoint) => spent_up_to(checkpoint)?,
        None => None,
    };
    let (result, mut time) = measure(name, || body(resume_from.is_some()));
    result.with_context(|| format!("recipe stage {name}"))?;
    time.resumed = resume_from.is_some();
    if let Some(earlier) = earlier {
        time.seconds += earlier.seconds;
        time.cpu_seconds = time
            .cpu_seconds
            .zip(earlier.cpu_seconds)
            .map(|(now, before)| now + before);
        time.earlier_parts_counted = true;
    }
    println!("xtask: {name}: {:.1} min", time.seconds / 60.0);
    std::fs::write(&time_file, toml::to_string(&time)?)
        .with_context(|| format!("writing {}", time_file.display()))?;
    Ok(time)
}

/// Runs `body`, measuring its wall time and its child processes' processor time.
fn measure<T>(name: &str, body: impl FnOnce() -> T) -> (T, StageTime) {
    let started = Instant::now();
    let cpu_before = children_cpu_seconds();
    let result = body();
    let time = StageTime {
        name: name.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: children_cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        resumed: false,
        earlier_parts_counted: false,
        earlier: false,
    };
    (result, time)
}

/// Processor seconds used so far by this process's finished child processes.
fn children_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes the struct it is given, which lives for the call.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// The checkpoint an interrupted stage continues from, as `tessera train --resume` picks it: the
/// newest complete one (with its `trainer.json`). A stage killed before its first checkpoint
/// starts over.
fn newest_complete_checkpoint(out: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|dir| dir.join("trainer.json").is_file())
        .max()
}

/// What a training run had spent up to `checkpoint`, over all its invocations, as the trainer
/// records it there (`spent-time.json`); `None` for a checkpoint that does not say.
fn spent_up_to(checkpoint: &Path) -> Result<Option<SpentTime>> {
    let path = checkpoint.join(SPENT_TIME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A training checkpoint's `spent-time.json` (written by `tessera-train`).
#[derive(Deserialize)]
struct SpentTime {
    seconds: f64,
    cpu_seconds: Option<f64>,
}

const SPENT_TIME_FILE: &str = "spent-time.json";

/// The core, converted by `convert`, into `export` beside the tokenizers already there: its
/// files replace the previous core's, so a failed conversion leaves the previous one whole.
fn export_core(
    convert: &dyn Fn(&Path, &Path) -> Result<()>,
    core: &Path,
    work: &Path,
    export: &Path,
) -> Result<()> {
    let staging = work.join("export");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    convert(core, &staging)?;
    std::fs::create_dir_all(export).with_context(|| format!("creating {}", export.display()))?;
    for entry in
        std::fs::read_dir(&staging).with_context(|| format!("reading {}", staging.display()))?
    {
        let entry = entry?;
        let target = export.join(entry.file_name());
        std::fs::rename(entry.path(), &target)
            .with_context(|| format!("moving the core's export to {}", target.display()))?;
    }
    Ok(())
}

fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The card's fixed text (`MODEL_CARD.md` beside the recipe) followed by what this run measured.
fn model_card(
    recipe_dir: &Path,
    times: &[StageTime],
    report: &str,
    megabytes: f64,
    recipe_text: &str,
) -> Result<String> {
    let head_path = recipe_dir.join("MODEL_CARD.md");
    let mut card = std::fs::read_to_string(&head_path)
        .with_context(|| format!("reading {}", head_path.display()))?;
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(card, "\n## Measured by `cargo xtask default-model`\n")?;
    writeln!(
        card,
        "Machine: {machine}, {cores} cores, CPU only. Size: {megabytes:.1} MB.\n"
    )?;
    writeln!(
        card,
        "| stage | minutes | processor minutes |\n|---|---|---|"
    )?;
    let mut total = 0.0;
    let mut total_cpu = 0.0;
    for time in times {
        total += time.seconds;
        total_cpu += time.cpu_seconds.unwrap_or(0.0);
        let cpu = time
            .cpu_seconds
            .map_or("not measured".to_owned(), |s| format!("{:.1}", s / 60.0));
        let mut minutes = format!("{:.1}", time.seconds / 60.0);
        if time.resumed && time.earlier_parts_counted {
            minutes.push_str(
                " (resumed; the interrupted invocations counted to their last checkpoint)",
            );
        } else if time.resumed {
            minutes.push_str(" (after resuming; the interrupted part is not counted)");
        }
        if time.earlier {
            minutes.push_str(" (an earlier invocation)");
        }
        writeln!(card, "| {} | {minutes} | {cpu} |", time.name)?;
    }
    writeln!(
        card,
        "| total | {:.1} | {:.1} |\n",
        total / 60.0,
        total_cpu / 60.0
    )?;
    writeln!(
        card,
        "Evaluation on unseen scenes (`tessera eval shapes`):\n"
    )?;
    writeln!(card, "```text\n{}```\n", report)?;
    writeln!(card, "The recipe (`recipes/default-model/recipe.toml`):\n")?;
    writeln!(card, "```toml\n{}```", recipe_text)?;
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The card keeps the fixed text, reports every stage with the invocation that measured it,
    /// and totals wall and processor time over the stages.
    #[test]
    fn the_model_card_reports_every_stage_and_the_totals() {
        let dir = std::env::temp_dir().join(format!("xtask-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MODEL_CARD.md"), "# fixed text\n").unwrap();
        let stage = |name: &str, seconds: f64, cpu: Option<f64>, resumed, earlier| StageTime {
            name: name.into(),
            seconds,
            cpu_seconds: cpu,
            resumed,
            earlier_parts_counted: false,
            earlier,
        };
        let times = [
            stage("tokenizer tok_rgb@224", 600.0, None, false, true),
            StageTime {
                earlier_parts_counted: true,
                ..stage("tokenizer tok_depth@224", 540.0, Some(900.0), true, false)
            },
            stage("core", 1200.0, Some(2100.0), true, false),
            stage("eval (200 scenes)", 300.0, Some(540.0), false, false),
        ];
        let card = model_card(&dir, &times, "metric table\n", 21.5, "[core]\n").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(card.starts_with("# fixed text\n"), "{card}");
        assert!(
            card.contains(
                "| tokenizer tok_rgb@224 | 10.0 (an earlier invocation) | not measured |"
            ),
            "{card}"
        );
        assert!(
            card.contains(
                "| core | 20.0 (after resuming; the interrupted part is not counted) | 35.0 |"
            ),
            "{card}"
        );
        assert!(
            card.contains(
                "| tokenizer tok_depth@224 | 9.0 (resumed; the interrupted invocations counted \
                 to their last checkpoint) | 15.0 |"
            ),
            "{card}"
        );
        assert!(card.contains("| total | 44.0 | 59.0 |"), "{card}");
        assert!(card.contains("Size: 21.5 MB"), "{card}");
        assert!(
            card.contains("metric table") && card.contains("[core]"),
            "{card}"
        );
    }

    /// A stage whose training folder holds a complete checkpoint is told to resume; one with
    /// only an incomplete checkpoint starts over.
    #[test]
    fn a_stage_resumes_from_a_complete_checkpoint_only() {
        let dir = std::env::temp_dir().join(format!("xtask-resume-{}", std::process::id()));
        let (out, done) = (dir.join("training"), dir.join("shipped"));
        let checkpoint = out.join("checkpoints/step-00000100");
        std::fs::create_dir_all(&checkpoint).unwrap();
        let mut told = Vec::new();
        let run = |told: &mut Vec<bool>| {
            stage("core", &out, &done, |resume| {
                told.push(resume);
                Err(anyhow::anyhow!("stopped"))
            })
        };
        assert!(run(&mut told).is_err());
        std::fs::write(checkpoint.join("trainer.json"), "{}").unwrap();
        assert!(run(&mut told).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(told, [false, true]);
    }

    /// A resumed stage's time includes what its run had spent up to the checkpoint it resumed
    /// from, as that checkpoint records it; of two complete checkpoints, the newer one.
    #[test]
    fn a_resumed_stage_counts_the_interrupted_invocations() {
        let dir = std::env::temp_dir().join(format!("xtask-spent-{}", std::process::id()));
        let (out, done) = (dir.join("training"), dir.join("shipped"));
        for (step, seconds) in [(100, 300.0), (200, 600.0)] {
            let checkpoint = out.join(format!("checkpoints/step-{step:08}"));
            std::fs::create_dir_all(&checkpoint).unwrap();
            std::fs::write(checkpoint.join("trainer.json"), "{}").unwrap();
            std::fs::write(
                checkpoint.join(SPENT_TIME_FILE),
                format!(
                    "{{\"seconds\": {seconds}, \"cpu_seconds\": {}}}",
                    seconds * 1.5
                ),
            )
            .unwrap();
        }
        let time = stage("core", &out, &done, |resume| {
            assert!(resume);
            std::fs::create_dir_all(&done)?;
            std::fs::write(done.join("config.json"), "{}")?;
            Ok(())
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(time.resumed && time.earlier_parts_counted);
        assert!((600.0..660.0).contains(&time.seconds), "{}", time.seconds);
        if let Some(cpu) = time.cpu_seconds {
            assert!((900.0..960.0).contains(&cpu), "{cpu}");
        }
    }

    /// A damaged `spent-time.json` stops the stage before it runs, naming the file.
    #[test]
    fn a_damaged_spent_time_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-damaged-{}", std::process::id()));
        let (out, done) = (dir.join("training"), dir.join("shipped"));
        let checkpoint = out.join("checkpoints/step-00000100");
        std::fs::create_dir_all(&checkpoint).unwrap();
        std::fs::write(checkpoint.join("trainer.json"), "{}").unwrap();
        std::fs::write(checkpoint.join(SPENT_TIME_FILE), "{ not json").unwrap();
        let err = stage("core", &out, &done, |_| {
            panic!("not run with an unreadable time")
        })
        .unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{err:#}").contains(SPENT_TIME_FILE), "{err:#}");
    }

    /// A stage time written by one invocation reads back in the next, marked as earlier.
    #[test]
    fn stage_times_survive_a_rerun() {
        let dir = std::env::temp_dir().join(format!("xtask-stage-{}", std::process::id()));
        let (out, done) = (dir.join("training"), dir.join("shipped"));
        std::fs::create_dir_all(&dir).unwrap();
        let first = stage("tokenizer tok_depth@224", &out, &done, |resume| {
            assert!(!resume);
            std::fs::create_dir_all(&done)?;
            std::fs::write(done.join("config.json"), "{}")?;
            Ok(())
        })
        .unwrap();
        assert!(!first.earlier && !first.resumed);
        assert!(done.join(STAGE_TIME_FILE).is_file());
        let again = stage("tokenizer tok_depth@224", &out, &done, |_| {
            panic!("a finished stage is not run again")
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(again.earlier);
        assert_eq!(again.name, first.name);
        assert_eq!(again.seconds, first.seconds);
    }
}

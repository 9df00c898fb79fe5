//! `tessera train fm` as a user runs it: a short run on shapes-world scenes writes a loadable 4M
//! checkpoint and a loss curve, `--resume` continues it, bad input is refused with a clear error.

use super::tessera;
use std::path::{Path, PathBuf};

/// A checkpoint keeps the time its run spent, so a resumed run can state its whole cost.
fn assert_records_its_time(checkpoint: &Path) {
    let spent = tessera_train::read_spent_time(checkpoint)
        .unwrap()
        .expect("the checkpoint records its run's time");
    assert!(spent.seconds > 0.0, "{spent:?}");
}

#[test]
fn train_fm_runs_resumes_and_refuses_bad_input() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let dir_arg = dir.to_str().unwrap();
    let common = [
        "train",
        "fm",
        "--preset",
        "tiny",
        "--data",
        "world:3",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--out",
        dir_arg,
    ];
    let first = tessera(&[&common[..], &["--steps", "4"]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("step 4: loss"), "{stdout}");
    assert!(dir.join("model/model.safetensors").is_file());
    assert!(dir.join("model/config.json").is_file());
    assert!(dir.join("checkpoints/step-00000002/trainer.json").is_file());
    assert_records_its_time(&dir.join("checkpoints/step-00000002"));
    assert!(dir.join("loss.png").is_file());
    let inspect = tessera(&["model", "inspect", dir.join("model").to_str().unwrap()]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // Without --resume an existing run is not overwritten; with it, it continues.
    let again = tessera(&[&common[..], &["--steps", "4"]].concat());
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--resume"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // A longer schedule is another config: the checkpoint's is refused by name.
    let other = tessera(&[&common[..], &["--steps", "6", "--resume"]].concat());
    assert!(!other.status.success());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("another config") && stderr.contains("steps"),
        "{stderr}"
    );
    let resumed = tessera(&[&common[..], &["--steps", "4", "--resume"]].concat());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from"));

    // Missing data is named; --resume with nothing to resume is refused before the data is read,
    // let alone built.
    let on_missing_data = |flag: &str, out_name: &str| {
        let out_dir = out.path().join(out_name);
        let failed = tessera(&[
            "train",
            "fm",
            "--preset",
            "tiny",
            "--data",
            "/nonexistent/data.jsonl",
            flag,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(!failed.status.success());
        String::from_utf8_lossy(&failed.stderr).into_owned()
    };
    let stderr = on_missing_data("--batch-size=2", "missing");
    assert!(stderr.contains("/nonexistent/data.jsonl"), "{stderr}");
    let stderr = on_missing_data("--resume", "fresh");
    assert!(stderr.contains("--resume: no checkpoint"), "{stderr}");

    let empty = out.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let refused = tessera(&[
        "train",
        "fm",
        "--preset",
        "tiny",
        "--data",
        empty.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        out.path().join("other").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the dataset is empty"), "{stderr}");
}

/// `tessera train tokenizer`: a short run on rendered scenes and on a world dataset directory
/// writes a tokenizer that `VqTokenizer::load` reads, resumes, and refuses bad input by name.
#[test]
fn train_tokenizer_runs_resumes_and_refuses_bad_input() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let dir_arg = dir.to_str().unwrap();
    let common = [
        "train",
        "tokenizer",
        "--domain",
        "tok_semseg@224",
        "--preset",
        "tiny",
        "--scenes",
        "3",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--out",
        dir_arg,
    ];
    let first = tessera(&[&common[..], &["--steps", "4"]].concat());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("step 4: loss") && stdout.contains("perplexity"),
        "{stdout}"
    );
    assert!(dir.join("checkpoints/step-00000002/trainer.json").is_file());
    assert_records_its_time(&dir.join("checkpoints/step-00000002"));
    assert!(dir.join("loss.png").is_file());
    let tokenizer =
        tessera_model::VqTokenizer::load(dir.join("model"), &Default::default()).unwrap();
    assert_eq!(tokenizer.config().n_labels, Some(6));

    let again = tessera(&[&common[..], &["--steps", "4"]].concat());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let resumed = tessera(&[&common[..], &["--steps", "4", "--resume"]].concat());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from"));

    // From a dataset directory written by `tessera world dataset`.
    let world = out.path().join("world");
    let written = tessera(&[
        "world",
        "dataset",
        "--count",
        "2",
        "--out",
        world.to_str().unwrap(),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let from_dir = tessera(&[
        "train",
        "tokenizer",
        "--domain",
        "tok_depth@224",
        "--preset",
        "tiny",
        "--data",
        world.to_str().unwrap(),
        "--steps",
        "2",
        "--out",
        out.path().join("depth").to_str().unwrap(),
    ]);
    assert!(
        from_dir.status.success(),
        "{}",
        String::from_utf8_lossy(&from_dir.stderr)
    );

    let unknown = tessera(&[
        "train",
        "tokenizer",
        "--domain",
        "tok_clip@224",
        "--preset",
        "tiny",
        "--scenes",
        "1",
        "--out",
        out.path().join("x").to_str().unwrap(),
    ]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("tok_clip@224"), "{stderr}");
    let empty = tessera(&[
        "train",
        "tokenizer",
        "--domain",
        "tok_rgb@224",
        "--preset",
        "tiny",
        "--scenes",
        "0",
        "--out",
        out.path().join("y").to_str().unwrap(),
    ]);
    assert!(!empty.status.success());
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(stderr.contains("the dataset is empty"), "{stderr}");
}

/// The whole recipe at toy scale, as a user runs it: a tokenizer trained here encodes the world's
/// images for core training, and the trained core and tokenizer then serve a workflow through
/// the real `rgb` plugin, which writes a PNG. (Quality is not the point at this size; every
/// hand-over between the parts is.)
#[test]
fn a_tokenizer_and_core_trained_here_generate_an_image_through_the_plugins() {
    if !super::repo_root()
        .join("target/plugins/rgb/plugin.toml")
        .is_file()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "the rgb plugin is not built under CI (`cargo xtask plugins`)"
        );
        eprintln!("skipping: the rgb plugin is not built");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let path = |name: &str| out.path().join(name).to_str().unwrap().to_owned();
    let check = |output: std::process::Output, what: &str| {
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    // The tiny preset's patch 8 would not give tok_rgb@224's 14x14 grid at 224 pixels; patch 16
    // on 32-pixel training images does.
    let config = out.path().join("tok-config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "domain": "Rgb", "image_size": 32, "patch_size": 16,
            "encoder": {"dim": 32, "depth": 1, "heads": 2},
            "decoder": {"dim": 32, "depth": 1, "heads": 2},
            "codebook_size": 64, "latent_dim": 8, "batch_size": 4, "steps": 20,
        })
        .to_string(),
    )
    .unwrap();
    check(
        tessera(&[
            "train",
            "tokenizer",
            "--domain",
            "tok_rgb@224",
            "--config",
            config.to_str().unwrap(),
            "--scenes",
            "8",
            "--out",
            &path("tok"),
        ]),
        "train tokenizer",
    );
    let tokenizer = format!("tok_rgb@224={}", path("tok/model"));
    check(
        tessera(&[
            "train",
            "fm",
            "--preset",
            "tiny",
            "--data",
            "world:4",
            "--tokenizer",
            &tokenizer,
            "--batch-size",
            "2",
            "--steps",
            "3",
            "--checkpoint-every",
            "0",
            "--out",
            &path("fm"),
        ]),
        "train fm",
    );
    let inspect = check(
        tessera(&["model", "inspect", &path("fm/model")]),
        "model inspect",
    );
    let summary = String::from_utf8_lossy(&inspect.stdout);
    assert!(summary.contains("tok_rgb@224"), "{summary}");

    let workflow = out.path().join("caption-to-rgb.toml");
    std::fs::write(
        &workflow,
        r#"workflow_version = 1
[workflow]
name = "caption-to-rgb"
[inputs.caption]
domain = "caption"
[[steps]]
id = "rgb"
generate = "tok_rgb@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
[outputs]
image = "steps.rgb"
"#,
    )
    .unwrap();
    // Exported as the default model is: weights in f16, the tokenizer inside the model folder,
    // found there without --tokenizer.
    let bundle = out.path().join("bundle");
    check(
        tessera(&[
            "model",
            "convert",
            &path("fm/model"),
            "--dtype",
            "f16",
            "--out",
            bundle.to_str().unwrap(),
        ]),
        "model convert",
    );
    check(
        tessera(&[
            "model",
            "convert",
            &path("tok/model"),
            "--out",
            bundle.join("tokenizers/tok_rgb@224").to_str().unwrap(),
        ]),
        "model convert (tokenizer)",
    );
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    let (full, half) = (
        size(out.path().join("fm/model/model.safetensors")),
        size(bundle.join("model.safetensors")),
    );
    assert!(half * 100 < full * 51, "f16 {half} bytes vs f32 {full}");
    check(
        tessera(&[
            "run",
            workflow.to_str().unwrap(),
            "--model",
            bundle.to_str().unwrap(),
            "--input",
            "caption=a red cube",
            "--out",
            &path("run"),
            "--no-cache",
        ]),
        "run",
    );
    let png = std::fs::read(out.path().join("run/rgb/image.png")).expect("the rgb plugin's PNG");
    let decoder = png::Decoder::new(&png[..]);
    let reader = decoder.read_info().expect("a valid PNG");
    assert_eq!((reader.info().width, reader.info().height), (224, 224));

    // The evaluation runs every task this model serves on unseen scenes; its exit status is the
    // report's verdict (a toy model is not expected to beat the baselines, and need not).
    let eval = tessera(&[
        "eval",
        "shapes",
        "--model",
        &path("fm/model"),
        "--tokenizer",
        &tokenizer,
        "--scenes",
        "2",
        "--baseline-scenes",
        "4",
        "--out",
        &path("eval"),
    ]);
    let stderr = String::from_utf8_lossy(&eval.stderr);
    assert!(stderr.contains("skipping rgb -> depth"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("eval/report.json"))
            .unwrap_or_else(|e| panic!("no report ({e}): {stderr}")),
    )
    .unwrap();
    let rows = report["rows"].as_array().unwrap();
    let tasks: Vec<&str> = rows.iter().map(|r| r["task"].as_str().unwrap()).collect();
    // Relations and colours are measured only on scenes whose captions state some.
    let expected = [
        "rgb -> det",
        "caption -> det",
        "caption -> det: stated shapes",
        "caption -> det: own caption",
        "caption -> det: relations",
        "caption -> rgb: stated colours",
        "caption -> rgb: own caption",
        "tok_rgb@224 reconstruction",
    ];
    assert!(
        tasks.iter().all(|t| expected.contains(t))
            && [
                "rgb -> det",
                "caption -> det: stated shapes",
                "caption -> det: own caption",
                "tok_rgb@224 reconstruction"
            ]
            .iter()
            .all(|t| tasks.contains(t)),
        "{tasks:?}"
    );
    let beats = |r: &serde_json::Value| {
        let (value, baseline) = (
            r["value"].as_f64().unwrap(),
            r["baseline"].as_f64().unwrap(),
        );
        assert!(value.is_finite() && baseline.is_finite(), "{r}");
        let scenes = r["scenes"].as_u64().unwrap();
        assert!((1..=2).contains(&scenes), "{r}");
        let confidence = r["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence), "{r}");
        let better = if r["direction"] == "lower_is_better" {
            value < baseline
        } else {
            value > baseline
        };
        // Beating means beating clearly: on nearly every resample of the scenes.
        better && confidence >= 0.975
    };
    let all_beat = rows.iter().all(beats);
    assert_eq!(eval.status.success(), all_beat, "{stderr}");
    let table = std::fs::read_to_string(out.path().join("eval/report.txt")).unwrap();
    assert_eq!(table.lines().count(), rows.len() + 1, "{table}");
    let sheet = std::fs::read(out.path().join("eval/contact-sheet.png")).expect("a contact sheet");
    let reader = png::Decoder::new(&sheet[..])
        .read_info()
        .expect("a valid PNG");
    // Two scenes, each with its input, the generated image and no tile for the boxes.
    assert!(reader.info().height > 2 * 224, "{:?}", reader.info().height);
}

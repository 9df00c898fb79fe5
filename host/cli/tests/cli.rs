//! The `tessera` binary as a user runs it: exit codes, output formats and error messages.
//! Needs the plugins built (`cargo xtask plugins`) and the reference vocabulary in
//! `$TESSERA_FIXTURES/text/` (skipped outside CI when missing).

use std::path::PathBuf;
use std::process::{Command, Output};

#[path = "cli/serve.rs"]
mod serve;
#[path = "cli/train.rs"]
mod train;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vocab() -> Option<PathBuf> {
    let fixtures = std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    let vocab = fixtures.join("text/wordpiece_4m_30k.json");
    if vocab.is_file() {
        return Some(vocab);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing under CI",
        vocab.display()
    );
    eprintln!("skipping: {} is missing", vocab.display());
    None
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--plugins",
            repo_root().join("target/plugins").to_str().unwrap(),
        ])
        .args(args)
        .output()
        .expect("tessera runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn tokenize_and_detokenize_a_caption() {
    let Some(vocab) = vocab() else { return };
    let vocab = vocab.to_str().unwrap();
    let ids = stdout(&tessera(&[
        "tokenize",
        "--plugin",
        "caption",
        "--asset",
        vocab,
        "A Lake-house, with a Boat! [S_1]",
    ]));
    assert_eq!(ids.trim(), "4321 5857 4295 5208 4294 4937 4321 4215 4284 5");
    let mut args = vec!["detokenize", "--plugin", "caption", "--asset", vocab];
    args.extend(ids.split_whitespace());
    assert_eq!(
        stdout(&tessera(&args)).trim(),
        "a lake - house, with a boat! [S_1]"
    );
    let json = stdout(&tessera(&[
        "tokenize", "--plugin", "caption", "--asset", vocab, "--json", "a cat",
    ]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["ids"], serde_json::json!([4321, 4224]));
    assert_eq!(value["domain"], "caption");
}

#[test]
fn detokenize_writes_rendered_artifacts() {
    let Some(vocab) = vocab() else { return };
    let out = tempfile::tempdir().unwrap();
    let ids = stdout(&tessera(&[
        "tokenize",
        "--plugin",
        "color-palette",
        "--asset",
        vocab.to_str().unwrap(),
        "[[255,0,0],[0,0,255]]",
    ]));
    let mut args = vec![
        "detokenize",
        "--plugin",
        "color-palette",
        "--asset",
        vocab.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend(ids.split_whitespace());
    assert_eq!(stdout(&tessera(&args)).trim(), "[[255,0,0],[0,0,255]]");
    assert!(
        std::fs::read(out.path().join("swatch.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
}

#[test]
fn bad_input_fails_with_a_clear_message_and_exit_code() {
    let Some(vocab) = vocab() else { return };
    let vocab = vocab.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "tokenize",
                "--plugin",
                "det",
                "--asset",
                vocab,
                r#"[{"label":"dog","xmin":-1,"ymin":0,"xmax":1,"ymax":1}]"#,
            ],
            "box 0",
        ),
        (
            &[
                "detokenize",
                "--plugin",
                "caption",
                "--asset",
                vocab,
                "12",
                "x7",
            ],
            "token 1",
        ),
        (&["tokenize", "--plugin", "nope", "x"], "no plugin `nope`"),
        (
            &[
                "tokenize",
                "--plugin",
                "caption",
                "--asset",
                "/missing/vocab.json",
                "x",
            ],
            "/missing/vocab.json",
        ),
    ];
    for (args, expected) in cases {
        let out = tessera(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn plugins_check_passes_on_the_built_plugins() {
    if vocab().is_none() {
        return;
    }
    let out = stdout(&tessera(&["plugins", "check"]));
    for id in ["caption", "det", "metadata", "color-palette"] {
        assert!(out.contains(&format!("ok      {id}")), "{out}");
    }
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn world_render_writes_every_modality_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&tessera(&[
        "world",
        "render",
        "--seed",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]));
    assert!(out.contains("scene 3"), "{out}");
    for file in [
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
        "contact_sheet.png",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let bad = tessera(&[
        "world",
        "dataset",
        "--count",
        "0",
        "--out",
        dir.path().join("ds").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("count was 0"));
    let bad = tessera(&[
        "world",
        "render",
        "--seed",
        "99999999999999999999",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn model_inspect_describes_the_fixture_checkpoints() {
    let fixtures = std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    let model = fixtures.join("fm/fm7_tiny_swiglu_shared");
    if !model.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing under CI",
            model.display()
        );
        return;
    }
    let out = stdout(&tessera(&["model", "inspect", model.to_str().unwrap()]));
    assert!(
        out.contains("1484416") || out.contains("1,484,416") || out.contains("1.5 M"),
        "{out}"
    );
    assert!(
        out.contains("tok_rgb@224") && out.contains("caption"),
        "{out}"
    );
    let bad = tessera(&["model", "inspect", "/nonexistent/model"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/model"));
}

#[test]
fn validate_reports_every_problem_with_its_location() {
    let golden = repo_root().join("host/workflow/tests/golden/invalid/cycle.toml");
    let out = tessera(&["validate", golden.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cycle.toml:") && text.contains("cycle"),
        "{text}"
    );
    let json = tessera(&["validate", "--json", golden.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value[0]["valid"], false);
    assert!(
        value[0]["diagnostics"][0]["line"].as_u64().is_some(),
        "{value}"
    );
    let builtin: Vec<String> = std::fs::read_dir(repo_root().join("workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["validate"];
    args.extend(builtin.iter().map(String::as_str));
    assert!(stdout(&tessera(&args)).contains("0 with errors"));
}

/// `tessera run` on the fixture model: outputs written and summarised, the repeat served from the
/// step cache with identical files, a bad workflow refused before anything runs.
#[test]
fn run_executes_a_workflow_and_serves_the_repeat_from_the_cache() {
    let Some(vocab) = vocab() else {
        return;
    };
    let model = vocab
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("fm/fm7_tiny_swiglu_shared");
    assert!(model.is_dir(), "{} is missing", model.display());
    let dir = tempfile::tempdir().unwrap();
    let workflow = dir.path().join("chain.toml");
    std::fs::write(
        &workflow,
        r#"workflow_version = 1
[workflow]
name = "cli-chain"
[inputs.caption]
domain = "caption"
[[steps]]
id = "boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
token_budget = 12
[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption", "steps.boxes"]
scheme = "roar"
decoding_steps = 3
[outputs]
boxes = "steps.boxes"
depth = "steps.depth"
"#,
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |out: &str| {
        tessera(&[
            "run",
            workflow.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
            "--input",
            "caption=a photo of a cat",
            "--out",
            dir.path().join(out).to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--seed",
            "5",
        ])
    };
    let first = stdout(&run("a"));
    assert!(
        first.contains("boxes") && first.contains("generated"),
        "{first}"
    );
    assert!(first.contains("tokens.raw.json"), "{first}");
    let boxes = std::fs::read(dir.path().join("a/boxes/boxes.json")).unwrap();
    let depth = std::fs::read(dir.path().join("a/depth/tokens.raw.json")).unwrap();
    let second = stdout(&run("b"));
    assert!(
        second.contains("cached") && !second.contains("generated"),
        "{second}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("b/boxes/boxes.json")).unwrap(),
        boxes
    );
    assert_eq!(
        std::fs::read(dir.path().join("b/depth/tokens.raw.json")).unwrap(),
        depth
    );

    // Missing input: named, with its domain; nothing written.
    let missing = tessera(&[
        "run",
        workflow.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("caption (caption)"));
    assert!(!dir.path().join("c").exists());

    // A workflow the model cannot run is reported like `tessera validate`, before running.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&workflow)
            .unwrap()
            .replace("tok_depth@224", "tok_sky@224"),
    )
    .unwrap();
    let refused = tessera(&[
        "run",
        bad.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--input",
        "caption=a cat",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&refused.stdout);
    assert!(shown.contains("tok_sky@224"), "{shown}");
    assert!(!dir.path().join("d").exists());
}

#[test]
fn demo_needs_no_fixtures_with_the_projects_own_vocabulary() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--plugins",
            repo_root().join("target/plugins").to_str().unwrap(),
            "demo",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .env("TESSERA_FIXTURES", "/nonexistent")
        .env_remove("TESSERA_VOCAB")
        .output()
        .expect("tessera runs");
    let text = stdout(&run);
    assert!(
        text.contains("back:  a small red cube, left of a large blue sphere! [S_1]"),
        "{text}"
    );
    assert!(text.contains("\"label\":\"sphere\""), "{text}");
    assert!(out.path().join("color_palette/swatch.png").is_file());
}

/// Ctrl-C during `tessera run`: the run stops promptly (within a decoding step, not at the end of
/// the workflow), says it was cancelled, exits with 130 and leaves no artifacts of unfinished
/// steps (nor temporary files).
#[test]
fn ctrl_c_cancels_a_run_promptly_and_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let Some(vocab) = vocab() else {
        return;
    };
    let model = vocab
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("fm/fm7_tiny_swiglu_shared");
    assert!(model.is_dir(), "{} is missing", model.display());
    let dir = tempfile::tempdir().unwrap();
    // Five chained steps of 196 guided ROAR steps each: far longer than the deadline below.
    let mut text = String::from(
        "workflow_version = 1\n[workflow]\nname = \"cli-long\"\n[inputs.caption]\ndomain = \"caption\"\n",
    );
    let mut previous = "inputs.caption".to_owned();
    for (id, domain) in [
        ("rgb", "tok_rgb@224"),
        ("depth", "tok_depth@224"),
        ("normal", "tok_normal@224"),
        ("semseg", "tok_semseg@224"),
        ("clip", "tok_clip@224"),
    ] {
        text.push_str(&format!(
            "[[steps]]\nid = \"{id}\"\ngenerate = \"{domain}\"\nfrom = [\"inputs.caption\", \"{previous}\"]\nscheme = \"roar\"\ndecoding_steps = 196\ncfg_scale = 2.0\n"
        ));
        previous = format!("steps.{id}");
    }
    text.push_str("[outputs]\nclip = \"steps.clip\"\n");
    let workflow = dir.path().join("long.toml");
    std::fs::write(
        &workflow,
        text.replace(
            "\"inputs.caption\", \"inputs.caption\"",
            "\"inputs.caption\"",
        ),
    )
    .unwrap();
    let out = dir.path().join("out");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--plugins",
            repo_root().join("target/plugins").to_str().unwrap(),
            "run",
            workflow.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
            "--input",
            "caption=a photo of a cat",
            "--out",
            out.to_str().unwrap(),
            "--no-cache",
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera starts");
    // Wait until the first step is generating (its start is logged when stderr is no terminal).
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the run never started a step: {seen:?}"));
        let started = line.contains("step `rgb` started");
        seen.push(line);
        if started {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let interrupted = Instant::now();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("tessera ignored SIGINT for 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stopped_after = interrupted.elapsed();
    reader.join().unwrap();
    seen.extend(lines_rx.try_iter());
    let stderr = seen.join("\n");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();

    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: cancelling the run"),
        "{stderr}"
    );
    assert!(stderr.contains("run cancelled:"), "{stderr}");
    assert!(stdout.contains("cancelled"), "{stdout}");
    assert!(
        !stderr.contains("step `clip` finished"),
        "the whole workflow ran: {stderr}"
    );
    // Prompt: one decoding step of the fixture model takes milliseconds; the rest of the workflow
    // (hundreds of steps) would take far longer.
    assert!(
        stopped_after < Duration::from_secs(5),
        "stopped {stopped_after:?} after SIGINT: {stderr}"
    );
    // No artifacts of unfinished steps, no temporary files.
    let mut files = Vec::new();
    let mut stack = vec![out.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    for file in &files {
        let relative = file.strip_prefix(&out).unwrap().display().to_string();
        let step = relative.split('/').next().unwrap();
        assert!(
            stderr.contains(&format!("step `{step}` finished")),
            "{relative} of an unfinished step: {stderr}"
        );
        assert!(!relative.contains(".tmp"), "{relative}");
    }
}

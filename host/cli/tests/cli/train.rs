//! `tessera train fm` as a user runs it: a short run on shapes-world scenes writes a loadable 4M
//! checkpoint and a loss curve, `--resume` continues it, bad input is refused with a clear error.

use super::tessera;

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

    let missing = tessera(&[
        "train",
        "fm",
        "--preset",
        "tiny",
        "--data",
        "/nonexistent/data.jsonl",
        "--steps",
        "1",
        "--out",
        dir_arg,
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/data.jsonl"), "{stderr}");

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

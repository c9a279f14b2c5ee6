//! A run folder belongs to one run (`glow::run::folder`), tested on the main job's own
//! process (`tests/main_job/mod.rs`): a second fresh run into a folder is refused and
//! leaves the first run's files byte for byte as they were; `--overwrite` moves the old
//! run aside; two processes racing for one folder end with one run in it; a busy folder
//! is refused naming its holder, and after that holder is killed with SIGKILL the next
//! `--resume` takes the folder over; `--resume` refuses flags that change the model,
//! seed, optimiser or data, applies new optimiser settings, and with `--steps` at or
//! below the checkpoint's step does nothing. Unix only.
#![cfg(unix)]

mod main_job;
use main_job::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every file under `dir` with its bytes, by path relative to `dir`; the lock file,
/// which only says who holds the folder, aside.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read the folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name() != Some(glow::run::folder::LOCK_FILE.as_ref()) {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read a file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The lines of `stderr` that report an error.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

/// The step of the folder's checkpoint.
fn checkpoint_step(out: &Path) -> u64 {
    glow::checkpoint::read_header(out.join(glow::run::CHECKPOINT_FILE))
        .expect("a readable checkpoint")
        .train
        .step
}

#[test]
fn a_second_fresh_run_is_refused_and_leaves_the_first_untouched() {
    let dir = scratch("twice-fresh");
    let out = out_in(&dir);
    let args = flags(&out, 6, 3);
    let (status, stderr, _) = Trainee::run(&args, &dir.join("first"));
    assert!(status.success(), "{stderr}");
    let before = snapshot(&out);
    assert!(before.contains_key(Path::new("metrics.jsonl")));

    let (status, stderr, stdout) = Trainee::run(&args, &dir.join("second"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    let line = errors[0];
    assert!(line.contains("holds a run (step 6)"), "{line}");
    for way in ["--resume", "another --out", "--overwrite"] {
        assert!(line.contains(way), "names {way}: {line}");
    }
    assert!(!stdout.contains("{\"steps\""), "no summary: {stdout}");
    assert!(
        !stderr.contains("device:"),
        "refused before picking a device: {stderr}"
    );
    assert_eq!(
        snapshot(&out),
        before,
        "the first run's files are unchanged"
    );
}

#[test]
fn overwrite_moves_the_old_run_aside() {
    let dir = scratch("overwrite");
    let out = out_in(&dir);
    let (status, stderr, _) = Trainee::run(&flags(&out, 6, 3), &dir.join("first"));
    assert!(status.success(), "{stderr}");
    let old = snapshot(&out);

    let mut again = flags(&out, 2, 1);
    again.push("--overwrite".into());
    let (status, stderr, _) = Trainee::run(&again, &dir.join("again"));
    assert!(status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("--overwrite: moved the earlier run"))
        .unwrap_or_else(|| panic!("says where the old run went: {stderr}"));
    let aside = PathBuf::from(line.rsplit(" to ").next().unwrap());
    assert_eq!(aside.parent(), out.canonicalize().unwrap().parent());
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("run.20"),
        "named after the folder and the date: {}",
        aside.display()
    );
    assert_eq!(
        snapshot(&aside),
        old,
        "the old run, whole, in {}",
        aside.display()
    );
    assert_eq!(checkpoint_step(&out), 2, "the new run in the folder");
    let steps = logged_losses(&out).len();
    assert_eq!(steps, 2, "the new run's log alone");

    // --overwrite cannot be combined with --resume.
    let mut both = again.clone();
    both.push("--resume".into());
    let (status, stderr, _) = Trainee::run(&both, &dir.join("both"));
    assert_eq!(status.code(), Some(2), "{stderr}");
}

#[test]
fn two_runs_racing_for_one_folder_leave_one_run() {
    let dir = scratch("race");
    let out = out_in(&dir);
    let args = flags(&out, 30, 5);
    let mut a = Trainee::start(&args, &dir.join("a"));
    let mut b = Trainee::start(&args, &dir.join("b"));
    let results = [
        (a.wait(Duration::from_secs(120)), a.stderr()),
        (b.wait(Duration::from_secs(120)), b.stderr()),
    ];
    let trained = results.iter().filter(|(s, _)| s.success()).count();
    assert_eq!(trained, 1, "exactly one trains: {results:#?}");
    let (status, stderr) = results.iter().find(|(s, _)| !s.success()).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let line = error_lines(stderr).concat();
    assert!(
        line.contains("is in use by another run (") || line.contains("holds a run"),
        "{line}"
    );
    // One run's log: every line whole, each step once.
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("a broken line {l:?}: {e}"));
    }
    let steps: Vec<u64> = logged_losses(&out).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=30).collect::<Vec<_>>());
}

#[test]
fn a_busy_folder_is_refused_and_taken_over_after_its_run_is_killed() {
    let dir = scratch("busy");
    let out = out_in(&dir);
    // Long enough to be running while the others try; a checkpoint every step.
    let args = flags(&out, 100_000, 1);
    let mut holder = Trainee::start(&args, &dir.join("holder"));
    assert!(
        poll(Duration::from_secs(60), || last_logged_step(&out) >= 2),
        "the first run made no progress: {}",
        holder.stderr()
    );
    let pid = holder.process.id();

    let mut resume = args.clone();
    resume.push("--resume".into());
    for (name, second) in [("fresh", &args), ("resume", &resume)] {
        let (status, stderr, _) = Trainee::run(second, &dir.join(name));
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{name}: {stderr}");
        assert!(
            errors[0].contains(&format!("is in use by another run (process {pid}, since ")),
            "{name} names the holder: {}",
            errors[0]
        );
    }

    holder.process.kill().expect("SIGKILL");
    holder.wait(Duration::from_secs(10));
    let at = checkpoint_step(&out);
    // No manual step: the lock went with the process.
    let (status, stderr, _) = Trainee::run(
        &with_flag(&resume, "--steps", &(at + 3).to_string()),
        &dir.join("after"),
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(checkpoint_step(&out), at + 3);
}

#[test]
fn resume_refuses_what_the_checkpoint_defines_and_takes_what_may_change() {
    let dir = scratch("conflicts");
    let out = out_in(&dir);
    let args = flags(&out, 4, 2);
    let (status, stderr, _) = Trainee::run(&args, &dir.join("first"));
    assert!(status.success(), "{stderr}");
    let before = snapshot(&out);
    let mut resume = args.clone();
    resume.push("--resume".into());

    // Every flag that defines the model, the seed or the optimiser, at once.
    let mut changed = with_flag(&resume, "--depth", "4");
    changed = with_flag(&changed, "--seed", "5");
    changed = with_flag(&changed, "--optimizer", "adam");
    changed = with_flag(&changed, "--coupling", "additive");
    changed.push("--learn-top".into());
    let (status, stderr, _) = Trainee::run(&changed, &dir.join("model"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    for difference in [
        "--depth 4 (the checkpoint has 2)",
        "--seed 5 (the checkpoint has 3)",
        "--optimizer adam (the checkpoint has adamax)",
        "--coupling additive (the checkpoint has affine)",
        "--learn-top on (the checkpoint has off)",
    ] {
        assert!(
            errors[0].contains(difference),
            "{difference}: {}",
            errors[0]
        );
    }
    assert_eq!(snapshot(&out), before);

    // Other images: the first 1,000 records of the built-in sample.
    let sample = glow::data::default_data_dir().join("data_batch_1.bin");
    let bytes = std::fs::read(sample).unwrap();
    let other = dir.join("other.bin");
    std::fs::write(&other, &bytes[..1000 * 3073]).unwrap();
    let (status, stderr, _) = Trainee::run(
        &with_flag(&resume, "--data", &other.display().to_string()),
        &dir.join("data"),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        error_lines(&stderr)
            .concat()
            .contains("the data (the checkpoint's training split has CRC-32"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before);

    // Given with the checkpoint's own values, they are no conflict.
    let same = with_flag(&resume, "--depth", "2");

    // Nothing to train: said in one line, exit 0, the folder untouched.
    for steps in ["4", "2"] {
        let (status, stderr, stdout) =
            Trainee::run(&with_flag(&same, "--steps", steps), &dir.join("done"));
        assert!(status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "is at step 4 already, at or past the {steps} steps"
            )),
            "{stderr}"
        );
        assert!(stdout.contains("\"trained_steps\":0"), "{stdout}");
        assert_eq!(snapshot(&out), before, "--steps {steps} touched nothing");
    }

    // What may change: the optimiser's settings, the batch, the schedule.
    let mut go_on = with_flag(&same, "--steps", "6");
    go_on = with_flag(&go_on, "--lr", "0.0005");
    go_on = with_flag(&go_on, "--batch", "8");
    let (status, stderr, _) = Trainee::run(&go_on, &dir.join("go-on"));
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("resume: --lr 0.0005 replaces the checkpoint's 0.001"),
        "{stderr}"
    );
    let ckpt = glow::checkpoint::read_header(out.join(glow::run::CHECKPOINT_FILE)).unwrap();
    assert_eq!((ckpt.train.step, ckpt.optimizer.lr), (6, 0.0005));
}

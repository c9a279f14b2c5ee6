//! Data-parallel training over MPI, end to end: `mpirun -np 2` of the `train_cifar10`
//! example (built with the `mpi` feature) against one process of it.
//!
//! Runs only with the feature: `cargo test --features mpi --test mpi`. `cargo test --test`
//! does not build examples, so the first test to need the example builds it with the
//! feature (`cargo build --profile test --features mpi --example train_cifar10`, or
//! `--release` under `cargo test --release`; a no-op when it is up to date); where that
//! fails, every test fails at once, naming that command. Needs Open MPI's `mpirun` on the `PATH`; as root it sets
//! `OMPI_ALLOW_RUN_AS_ROOT` and `OMPI_ALLOW_RUN_AS_ROOT_CONFIRM` for its children.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use glow_rs::testing::Scratch;
use glow_rs::testing::{example_binary, step_losses};
use serde_json::Value;
use std::sync::OnceLock;

/// A fresh directory for one test (see `glow_rs::testing::Scratch`).
fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("mpi-{name}"))
}

/// The model and schedule of every run here: small enough for 20 steps in seconds.
fn train_args(out: &Path, steps: u64) -> Vec<String> {
    [
        "--device=cpu",
        "--levels=2",
        "--depth=2",
        "--hidden=16",
        "--learn-top",
        "--batch=16",
        "--eval-every=10",
        "--sample-every=0",
        "--checkpoint-every=5",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--steps={steps}"),
        format!("--out={}", out.display()),
    ])
    .collect()
}

/// The cargo arguments that build the example these tests run, with the `mpi` feature,
/// into the profile folder this test binary was built in (`target/debug` for `cargo test`,
/// `target/release` for `cargo test --release`), where `example_binary` looks for it.
fn build_args() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name);
    let profile = match profile_dir.and_then(|p| p.to_str()) {
        Some("release") => vec!["--release".to_string()],
        Some("debug") | None => vec!["--profile".into(), "test".into()],
        Some(other) => vec!["--profile".into(), other.into()],
    };
    ["build"]
        .iter()
        .map(|s| s.to_string())
        .chain(profile)
        .chain(["--features", "mpi", "--example", "train_cifar10"].map(String::from))
        .collect()
}

/// The `train_cifar10` example built with the `mpi` feature. An example built by a plain
/// `cargo test` lacks the feature (and would refuse to run as one of several ranks), so
/// the first call builds it ([`build_args`]) with the cargo that runs these tests, once
/// per process.
fn mpi_example() -> &'static Path {
    static BUILT: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        // Cargo sets `CARGO` for the test binaries it runs; a binary started by hand falls
        // back to the cargo that compiled it, then to the one on the PATH.
        let cargo = std::env::var("CARGO")
            .ok()
            .or(option_env!("CARGO").map(String::from))
            .unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let args = build_args();
        let command = format!("cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .args(&args)
            .arg("--manifest-path")
            .arg(&manifest)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(example_binary("train_cifar10")),
            Ok(s) => Err(format!("`{command}` failed ({s}); run it first to see why")),
            Err(e) => Err(format!(
                "could not start {cargo} ({e}); run `{command}` first"
            )),
        }
    });
    match built {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

/// `mpirun -np ranks` of the example (`ranks` = 0: the example alone), one thread each.
fn command(ranks: usize, args: &[String]) -> Command {
    let mut cmd = if ranks == 0 {
        Command::new(mpi_example())
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &ranks.to_string()]);
        c.arg(mpi_example());
        c
    };
    cmd.args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null());
    cmd
}

fn run(ranks: usize, args: &[String]) -> Output {
    let out = command(ranks, args)
        .output()
        .expect("start mpirun (is Open MPI installed?)");
    assert!(
        out.status.success(),
        "{ranks} ranks: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON summary: the last line of stdout.
fn summary(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary {last:?}: {e}"))
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn two_ranks_of_8_train_as_one_process_of_16() {
    let scratch = scratch("equal");
    let (one, two) = (scratch.path("one"), scratch.path("two"));
    let single = run(0, &train_args(&one, 20));
    let parallel = run(2, &train_args(&two, 20));
    let (a, b) = (step_losses(&metrics(&one)), step_losses(&metrics(&two)));
    assert_eq!(a.len(), 20);
    assert_eq!(
        a.iter().map(|p| p.0).collect::<Vec<_>>(),
        b.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        // Two shard means averaged against one mean of 16: equal up to the order of
        // summation. Measured: at most 6.7e-6 over the 20 steps.
        assert!(
            (x - y).abs() <= 1e-5,
            "step {step}: one process {x}, two ranks {y}"
        );
    }
    let s = summary(&parallel);
    // The run checks at its end that every rank holds the same weights
    // (glow::parallel::check_replicas) and fails otherwise; "ranks" says it ran as two.
    assert_eq!(s["ranks"], 2, "{s}");
    assert_eq!(summary(&single)["ranks"], 1);
    // Rank 0 alone writes: one summary line, one metrics log, one set of checkpoints.
    let stdout = String::from_utf8_lossy(&parallel.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('{')).count(),
        1,
        "{stdout}"
    );
    for f in [
        "checkpoint.safetensors",
        "best.safetensors",
        "loss_curve.png",
    ] {
        assert!(two.join(f).is_file(), "{f}");
    }
}

#[test]
fn two_vulkan_ranks_train_as_one_vulkan_process() {
    // Each rank opens Vulkan device `rank mod count`: on lavapipe both open device 0. The
    // gradients go through the host in one read-back and one upload per step.
    if glow_rs::testing::vulkan_device().is_none() {
        return;
    }
    let scratch = scratch("vulkan");
    let args = |out: &Path| -> Vec<String> {
        // No evaluation: 300 test images on lavapipe would take most of the test's time.
        train_args(out, 3)
            .into_iter()
            .map(|a| match a.as_str() {
                "--device=cpu" => "--device=vulkan".into(),
                "--eval-every=10" => "--eval-every=0".into(),
                _ => a,
            })
            .collect()
    };
    let (one, two) = (scratch.path("one"), scratch.path("two"));
    run(0, &args(&one));
    let parallel = run(2, &args(&two));
    assert_eq!(summary(&parallel)["ranks"], 2);
    let (a, b) = (step_losses(&metrics(&one)), step_losses(&metrics(&two)));
    assert_eq!(a.len(), 3);
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        // Measured: at most 9e-6 over the 3 steps (step 2).
        assert!(
            (x - y).abs() <= 1e-5,
            "step {step}: one process {x}, two ranks {y}"
        );
    }
}

#[test]
fn a_rank_that_dies_ends_the_job_and_the_checkpoint_resumes_with_other_rank_counts() {
    let scratch = scratch("death");
    let out = scratch.path("run");
    let mut job = command(2, &train_args(&out, 100_000))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    // Wait for the checkpoint of step 5, then kill rank 1.
    let started = Instant::now();
    let has_checkpoint = |dir: &Path| {
        std::fs::read_to_string(dir.join("metrics.jsonl")).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["checkpoint"] == "checkpoint.safetensors" && v["step"] == 5)
        })
    };
    while !has_checkpoint(&out) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint at step 5 after 2 minutes"
        );
        assert!(
            job.try_wait().expect("wait").is_none(),
            "the job ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rank1 = rank_pid(job.id(), 1).expect("rank 1's process");
    unsafe { libc::kill(rank1 as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = job.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the job went on after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = job.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "the job succeeded after a rank died");
    for line in stderr.lines().filter(|l| l.contains("rank 1")) {
        eprintln!("mpirun: {line}");
    }
    // Open MPI's own report of the death, naming the rank and the signal.
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "no clear error naming the dead rank:\n{stderr}"
    );
    // The last checkpoint resumes, with one rank and with two.
    let step = |dir: &Path| {
        metrics(dir)
            .iter()
            .filter(|v| v["checkpoint"] == "checkpoint.safetensors")
            .filter_map(|v| v["step"].as_u64())
            .max()
            .expect("a checkpoint line")
    };
    let at = step(&out);
    assert!(at >= 5, "checkpoint at step {at}");
    for (ranks, more) in [(0usize, 2u64), (2, 4)] {
        let mut args = train_args(&out, at + more);
        args.push("--resume".into());
        let s = summary(&run(ranks, &args));
        assert_eq!(s["steps"], at + more, "{s}");
        let metrics = metrics(&out);
        assert!(metrics
            .iter()
            .any(|v| v["resumed"] == "checkpoint.safetensors"));
    }
}

#[test]
fn ctrl_c_stops_every_rank_at_the_same_step_with_a_checkpoint() {
    // mpirun passes SIGINT on to the ranks as SIGTERM; each requests a stop, and the
    // ranks agree on it (one flag summed each step), so they stop after the same step
    // and rank 0 writes the checkpoint of that step.
    let scratch = scratch("interrupt");
    let out = scratch.path("run");
    let job = command(2, &train_args(&out, 100_000))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    let started = Instant::now();
    while !std::fs::read_to_string(out.join("metrics.jsonl"))
        .is_ok_and(|t| t.contains("\"step\":10"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step 10 after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(job.id() as i32, libc::SIGINT) };
    let output = job.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = metrics(&out);
    let stopped = lines
        .iter()
        .find_map(|v| v["interrupted"].as_u64().and(v["step"].as_u64()))
        .unwrap_or_else(|| panic!("no interruption logged:\n{stderr}"));
    let last = lines.last().expect("a line");
    assert_eq!(last["checkpoint"], "checkpoint.safetensors", "{last}");
    assert_eq!(last["reason"], "interrupted", "{last}");
    assert_eq!(last["step"], stopped, "{last}");
    assert!(stderr.contains("resume with:\n  mpirun -np 2 "), "{stderr}");
    let s = summary(&output);
    assert_eq!(s["steps"], stopped, "{s}");
}

/// The process of MPI rank `rank` among the descendants of `root` (mpirun's children,
/// or their children), found by `OMPI_COMM_WORLD_RANK` in its environment.
fn rank_pid(root: u32, rank: usize) -> Option<u32> {
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let env = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
            let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
            if env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()) {
                return Some(child);
            }
            frontier.push(child);
        }
    }
    None
}

//! The main job as a child process, for the tests that start it, stop it and read its
//! run folder (`tests/train_interrupt.rs`, `tests/run_folder.rs`).
//!
//! The child process is the test binary again, running [`child`], which calls
//! `examples/train_cifar10.rs`'s `main_with` (the file is included below): the code under
//! test is the example's own, flags, signal handlers and exit statuses included, and no
//! separate build of the example is needed. [`flags`] is a tiny model (L=2, K=2, hidden
//! 8, batches of 4) on the CPU device, so a child starts in a fraction of a second.
#![allow(dead_code)] // each test binary uses its own part

#[path = "../../examples/train_cifar10.rs"]
#[allow(dead_code)]
mod train_cifar10;

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The variable that makes [`child`] run the example: its arguments, one per line.
const CHILD_ARGS: &str = "TRAIN_CIFAR10_CHILD_ARGS";

/// Not a test of its own: the child process of the tests (ignored, so it runs only when
/// they start it; without [`CHILD_ARGS`] it does nothing).
#[test]
#[ignore = "the child process of the other tests of this binary"]
fn child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let argv: Vec<OsString> = std::iter::once("train_cifar10".into())
        .chain(args.lines().map(OsString::from))
        .collect();
    std::process::exit(train_cifar10::main_with(argv));
}

pub use glow_rs::testing::Scratch;

/// A fresh directory for one test (`glow_rs::testing::Scratch`).
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(env!("CARGO_TARGET_TMPDIR"), &format!("main-job-{name}"))
}

/// The run folder inside `dir`.
pub fn out_in(dir: &Scratch) -> PathBuf {
    dir.path("run")
}

/// The example's flags for a tiny run of `steps` steps into `out`.
pub fn flags(out: &Path, steps: u64, checkpoint_every: u64) -> Vec<String> {
    let mut f: Vec<String> = "--device cpu --levels 2 --depth 2 --hidden 8 --batch 4 \
        --eval-every 0 --sample-every 0 --checkpoint-minutes 0 --seed 3"
        .split(' ')
        .map(String::from)
        .collect();
    f.extend(["--steps".into(), steps.to_string()]);
    f.extend(["--checkpoint-every".into(), checkpoint_every.to_string()]);
    f.extend(["--out".into(), out.display().to_string()]);
    f
}

/// A running child with its output going to `{log}.stdout` and `{log}.stderr`.
pub struct Trainee {
    /// The child.
    pub process: Child,
    log: PathBuf,
}

impl Trainee {
    pub fn start(args: &[String], log: &Path) -> Trainee {
        let file = |ext: &str| File::create(log.with_extension(ext)).expect("create a log");
        let process = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "main_job::child", "--ignored", "--nocapture"])
            .env(CHILD_ARGS, args.join("\n"))
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("start the child");
        Trainee {
            process,
            log: log.to_path_buf(),
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it reads no memory of ours.
        let r = unsafe { libc::kill(self.process.id() as libc::pid_t, signal) };
        assert_eq!(r, 0, "kill({signal}) failed");
    }

    /// Waits at most `limit` for the child to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > end {
                let _ = self.process.kill();
                panic!("the child ran past {limit:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }

    /// What the child printed on stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stdout")).unwrap_or_default()
    }

    /// Runs `args` to the end (at most two minutes): the exit status, stderr and stdout.
    pub fn run(args: &[String], log: &Path) -> (ExitStatus, String, String) {
        let mut child = Trainee::start(args, log);
        let status = child.wait(Duration::from_secs(120));
        (status, child.stderr(), child.stdout())
    }
}

/// `args` with `flag`'s value set to `value` (replaced where it is given, else added).
pub fn with_flag(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) => out[i + 1] = value.into(),
        None => out.extend([flag.to_string(), value.to_string()]),
    }
    out
}

/// Every complete line of the run's metrics log.
pub fn log_lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `(step, loss)` of the log's good steps, in order.
pub fn logged_losses(out: &Path) -> Vec<(u64, f32)> {
    glow_rs::testing::step_losses(&log_lines(out))
}

/// The last good step in the log.
pub fn last_logged_step(out: &Path) -> u64 {
    logged_losses(out).last().map_or(0, |s| s.0)
}

/// Polls until `done()` or `limit` passes; whether `done()` came true.
pub fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

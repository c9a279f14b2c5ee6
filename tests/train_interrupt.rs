//! The main job as a process, stopped by signals: Ctrl-C (SIGINT) or SIGTERM finishes the
//! step, checkpoints, prints the command that resumes and exits 130 or 143, and that
//! command gives the uninterrupted run's losses bit for bit; a second Ctrl-C exits at
//! once; and SIGKILL at random moments, inside checkpoint writes included, never costs
//! the run its checkpoint.
//!
//! The child process is this test binary again, running [`child`], which calls
//! `examples/train_cifar10.rs`'s `main_with` (the file is included below): the code under
//! test is the example's own, flags, signal handlers and exit statuses included, and no
//! separate build of the example is needed. Tiny model (L=2, K=2, hidden 8, batches of
//! 4) on the CPU device, so a child starts in a fraction of a second. Unix only.
#![cfg(unix)]

#[path = "../examples/train_cifar10.rs"]
#[allow(dead_code)]
mod train_cifar10;

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The variable that makes [`child`] run the example: its arguments, one per line.
const CHILD_ARGS: &str = "TRAIN_CIFAR10_CHILD_ARGS";

/// Not a test of its own: the child process of the tests below (ignored, so it runs
/// only when they start it; without [`CHILD_ARGS`] it does nothing).
#[test]
#[ignore = "the child process of this file's other tests"]
fn child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let argv: Vec<OsString> = std::iter::once("train_cifar10".into())
        .chain(args.lines().map(OsString::from))
        .collect();
    std::process::exit(train_cifar10::main_with(argv));
}

/// A fresh directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("glow-signal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
    fn out(&self) -> PathBuf {
        self.0.join("run")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example's flags for a tiny run of `steps` steps into `out`.
fn flags(out: &Path, steps: u64, checkpoint_every: u64) -> Vec<String> {
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
struct Trainee {
    process: Child,
    log: PathBuf,
}

impl Trainee {
    fn start(args: &[String], log: &Path) -> Trainee {
        let file = |ext: &str| File::create(log.with_extension(ext)).expect("create a log");
        let process = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "child", "--ignored", "--nocapture"])
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

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it reads no memory of ours.
        let r = unsafe { libc::kill(self.process.id() as libc::pid_t, signal) };
        assert_eq!(r, 0, "kill({signal}) failed");
    }

    /// Waits at most `limit` for the child to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
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

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }
}

/// Every complete line of the run's metrics log.
fn log_lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `(step, loss)` of the log's good steps, in order.
fn logged_losses(out: &Path) -> Vec<(u64, f32)> {
    glow_rs::testing::step_losses(&log_lines(out))
}

/// The last good step in the log.
fn last_logged_step(out: &Path) -> u64 {
    logged_losses(out).last().map_or(0, |s| s.0)
}

/// Polls until `done()` or `limit` passes; whether `done()` came true.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

/// The longest run any test here compares with.
const REFERENCE_STEPS: u64 = 80;

/// The losses of an uninterrupted run of [`REFERENCE_STEPS`] steps (computed once for
/// the tests of this binary; the checkpoint schedule does not change losses).
fn reference_losses() -> &'static [(u64, f32)] {
    static LOSSES: OnceLock<Vec<(u64, f32)>> = OnceLock::new();
    LOSSES.get_or_init(|| {
        let dir = Scratch::new("reference");
        let mut child = Trainee::start(&flags(&dir.out(), REFERENCE_STEPS, 0), &dir.0.join("ref"));
        let status = child.wait(Duration::from_secs(120));
        assert!(status.success(), "{status}: {}", child.stderr());
        let losses = logged_losses(&dir.out());
        assert_eq!(losses.len() as u64, REFERENCE_STEPS);
        losses
    })
}

/// The command line the child printed after "resume with:", without the program name.
fn printed_resume_args(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .skip_while(|l| !l.starts_with("resume with:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no resume command in:\n{stderr}"));
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    assert_eq!(words[0], "train_cifar10");
    assert_eq!(words.last().map(String::as_str), Some("--resume"));
    words[1..].to_vec()
}

#[test]
fn sigterm_and_ctrl_c_stop_cleanly_and_the_printed_command_resumes_bit_for_bit() {
    let dir = Scratch::new("stop");
    let out = dir.out();
    let steps = 24;
    let mut args = flags(&out, steps, 0);
    for (round, (signal, status)) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)]
        .into_iter()
        .enumerate()
    {
        let mut child = Trainee::start(&args, &dir.0.join(format!("round{round}")));
        let target = last_logged_step(&out) + 3;
        assert!(
            poll(Duration::from_secs(60), || last_logged_step(&out) >= target),
            "the child made no progress: {}",
            child.stderr()
        );
        child.signal(signal);
        let got = child.wait(Duration::from_secs(60));
        let stderr = child.stderr();
        assert_eq!(got.code(), Some(status), "{stderr}");
        let stopped_at = last_logged_step(&out);
        assert!(stopped_at < steps, "stopped before the end: {stderr}");
        // The checkpoint holds the step the run stopped at: nothing was lost.
        let ckpt = glow::checkpoint::load_checkpoint(out.join("checkpoint.safetensors"))
            .expect("a loadable checkpoint");
        assert_eq!(ckpt.train.step, stopped_at, "{stderr}");
        args = printed_resume_args(&stderr);
    }
    let mut child = Trainee::start(&args, &dir.0.join("last"));
    let status = child.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", child.stderr());
    let want = &reference_losses()[..steps as usize];
    assert_eq!(logged_losses(&out), want, "the same losses, each step once");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = Scratch::new("twice");
    let out = dir.out();
    // Batches of 64: steps of a few hundred milliseconds, time enough for two signals.
    let mut args = flags(&out, 1000, 0);
    let batch = args.iter().position(|a| a == "--batch").expect("--batch") + 1;
    args[batch] = "64".into();
    let mut child = Trainee::start(&args, &dir.0.join("twice"));
    assert!(poll(Duration::from_secs(60), || last_logged_step(&out) >= 1));
    // Right after a step's line, so the next step has only begun: the first signal asks
    // for a stop after it; the second, once the first has surely been delivered (two
    // pending signals of one kind would be merged into one), exits.
    let seen = last_logged_step(&out);
    assert!(poll(Duration::from_secs(60), || last_logged_step(&out) > seen));
    child.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(30));
    child.signal(libc::SIGINT);
    let status = child.wait(Duration::from_secs(60));
    let stderr = child.stderr();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("resume with"),
        "it exited without stopping cleanly: {stderr}"
    );
    // Whatever it was doing, the checkpoint on disk is whole.
    glow::checkpoint::load_checkpoint(out.join("checkpoint.safetensors")).expect("loadable");
}

#[test]
fn killed_at_random_moments_the_run_resumes_and_completes() {
    let dir = Scratch::new("kill");
    let out = dir.out();
    let ckpt = out.join("checkpoint.safetensors");
    // A checkpoint after every step, so kills land inside checkpoint writes.
    let fresh = flags(&out, REFERENCE_STEPS, 1);
    let mut resume = fresh.clone();
    resume.push("--resume".into());
    let mut rng = StdRng::seed_from_u64(20_240_601);
    let temporaries = || -> usize {
        std::fs::read_dir(&out)
            .map(|d| {
                d.filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy()
                        .starts_with(".checkpoint.safetensors.tmp.")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let started = Instant::now();
    let (mut kills, mut inside_writes, mut last_step) = (0, 0, 0);
    let (mut first_step, mut step_time) = (Duration::ZERO, Duration::ZERO);
    let mut outcomes = [0usize; 3];
    let mut left_for_the_last_run = 0;
    for round in 0..24 {
        let args = if round == 0 { &fresh } else { &resume };
        let mut child = Trainee::start(args, &dir.0.join(format!("kill{round}")));
        // Round 0 measures how long a child takes to its first step and from there to
        // its second; then three kinds of moment, in turn, scaled by those times so
        // that each round gets at most a step or two further on any machine: (0) a
        // random time after the start (during start-up, resume, a step or a write);
        // (1) a random time within a step after the child has taken one; (2) as soon
        // as a checkpoint write has begun.
        let spawned = Instant::now();
        let kind = round % 3;
        let reached = match kind {
            _ if round == 0 => {
                let first = poll(Duration::from_secs(60), || last_logged_step(&out) >= 1);
                first_step = spawned.elapsed();
                let second = poll(Duration::from_secs(60), || last_logged_step(&out) >= 2);
                step_time = spawned.elapsed() - first_step;
                first && second
            }
            0 => {
                let window = (first_step + step_time).as_micros() as u64;
                std::thread::sleep(Duration::from_micros(rng.random_range(0..window)));
                true
            }
            1 => {
                let seen = last_logged_step(&out);
                let stepped = poll(Duration::from_secs(60), || last_logged_step(&out) > seen);
                // A resumed child's start-up, which round 0 may have overestimated (a
                // busy machine): the shortest seen bounds kind 0's window.
                first_step = first_step.min(spawned.elapsed());
                let window = step_time.as_micros() as u64;
                std::thread::sleep(Duration::from_micros(rng.random_range(0..window)));
                stepped
            }
            _ => poll(Duration::from_secs(60), || temporaries() > 0),
        };
        assert!(
            reached,
            "round {round}: the child did not get there: {}",
            child.stderr()
        );
        if let Ok(Some(status)) = child.process.try_wait() {
            panic!(
                "round {round}: the child exited ({status}) before the kill: {}",
                child.stderr()
            );
        }
        child.process.kill().expect("SIGKILL");
        child.wait(Duration::from_secs(10));
        kills += 1;
        // A temporary file left behind: the kill came inside a checkpoint write. Remove
        // them (the next run would) so that the next round counts only its own, except
        // after the last round: the final run must remove those itself.
        let left = temporaries();
        if left > 0 {
            inside_writes += 1;
            outcomes[kind] += 1;
            if round < 23 {
                glow::atomic::remove_stale_temporaries(&ckpt).expect("remove");
            }
        }
        // Each time, a checkpoint that loads, no older than the last one.
        let loaded = glow::checkpoint::load_checkpoint(&ckpt)
            .unwrap_or_else(|e| panic!("round {round}: no loadable checkpoint: {e}"));
        assert!(loaded.train.step >= last_step, "round {round}");
        last_step = loaded.train.step;
    }
    assert!(last_step > 0, "the resumed runs got further between kills");
    assert!(last_step < REFERENCE_STEPS, "the kills came before the end");
    left_for_the_last_run += temporaries();
    let mut child = Trainee::start(&resume, &dir.0.join("last"));
    let status = child.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", child.stderr());
    assert_eq!(
        temporaries(),
        0,
        "the resumed run removed the {left_for_the_last_run} stale temporary files"
    );
    assert_eq!(
        logged_losses(&out),
        reference_losses(),
        "the same losses, each step once"
    );
    eprintln!(
        "{kills} kills in {:.1} s, {inside_writes} inside a checkpoint write (by kind: \
         {outcomes:?}); the checkpoint had reached step {last_step} of {REFERENCE_STEPS}; \
         first step after {first_step:?}, then {step_time:?} a step",
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 20);
    assert!(
        inside_writes >= 1,
        "no kill landed inside a checkpoint write"
    );
}

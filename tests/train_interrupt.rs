//! The main job as a process, stopped by signals: Ctrl-C (SIGINT) or SIGTERM finishes the
//! step, checkpoints, prints the command that resumes and exits 130 or 143, and that
//! command gives the uninterrupted run's losses bit for bit; a second Ctrl-C exits at
//! once; and SIGKILL at random moments, inside checkpoint writes included, never costs
//! the run its checkpoint.
//!
//! The child process is this test binary again (`tests/main_job/mod.rs`): the example's
//! own `main_with` on a tiny model on the CPU device. Unix only.
#![cfg(unix)]

mod main_job;
use main_job::*;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The longest run any test here compares with.
const REFERENCE_STEPS: u64 = 80;

/// The losses of an uninterrupted run of [`REFERENCE_STEPS`] steps (computed once for
/// the tests of this binary; the checkpoint schedule does not change losses).
fn reference_losses() -> &'static [(u64, f32)] {
    static LOSSES: OnceLock<Vec<(u64, f32)>> = OnceLock::new();
    LOSSES.get_or_init(|| {
        let dir = scratch("reference");
        let mut child = Trainee::start(&flags(&out_in(&dir), REFERENCE_STEPS, 0), &dir.join("ref"));
        let status = child.wait(Duration::from_secs(120));
        assert!(status.success(), "{status}: {}", child.stderr());
        let losses = logged_losses(&out_in(&dir));
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
    // The checkpoint holds the model, seed and optimiser: the command leaves them out.
    for held in ["--levels", "--depth", "--hidden", "--seed"] {
        assert!(!words.iter().any(|w| w == held), "{held} in {line}");
    }
    words[1..].to_vec()
}

#[test]
fn sigterm_and_ctrl_c_stop_cleanly_and_the_printed_command_resumes_bit_for_bit() {
    let dir = scratch("stop");
    let out = out_in(&dir);
    let steps = 24;
    let mut args = flags(&out, steps, 0);
    for (round, (signal, status)) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)]
        .into_iter()
        .enumerate()
    {
        let mut child = Trainee::start(&args, &dir.join(format!("round{round}")));
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
    let mut child = Trainee::start(&args, &dir.join("last"));
    let status = child.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", child.stderr());
    let want = &reference_losses()[..steps as usize];
    assert_eq!(logged_losses(&out), want, "the same losses, each step once");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = scratch("twice");
    let out = out_in(&dir);
    // Batches of 64: steps of a few hundred milliseconds, time enough for two signals.
    let mut args = flags(&out, 1000, 0);
    let batch = args.iter().position(|a| a == "--batch").expect("--batch") + 1;
    args[batch] = "64".into();
    let mut child = Trainee::start(&args, &dir.join("twice"));
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
    let dir = scratch("kill");
    let out = out_in(&dir);
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
        let mut child = Trainee::start(args, &dir.join(format!("kill{round}")));
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
    let mut child = Trainee::start(&resume, &dir.join("last"));
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

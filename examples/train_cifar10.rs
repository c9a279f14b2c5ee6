//! Train Glow on CIFAR-10.
//!
//! With no arguments it trains the L=3, K=8, hidden-128 model on the built-in 3,000-image
//! sample (2,700 for training, the last 300 held out), shows progress, and writes into
//! `--out` (default `runs/cifar10`): `checkpoint.safetensors`, `best.safetensors`,
//! `metrics.jsonl`, `loss_curve.png` and sample grids at the paper's temperatures under
//! `samples/`. It ends with one JSON line on stdout.
//!
//! The run itself is `glow::run::Run`; this file turns flags into its configuration and
//! its events into a progress bar. Ctrl-C (or SIGTERM) finishes the current step, writes
//! a checkpoint, prints the command that resumes, and exits with status 130 (143); a
//! second Ctrl-C exits at once.
//!
//! ```sh
//! cargo run --release --example train_cifar10
//! cargo run --release --example train_cifar10 -- --download data/cifar10 --steps 20000
//! cargo run --release --example train_cifar10 -- --resume   # continue runs/cifar10
//! ```
//!
//! Built with `--features mpi` and started by `mpirun -np N`, each process is one rank of
//! a data-parallel run: `--batch` is the global batch, each rank trains on its shard, and
//! rank 0 alone prints and writes (`glow::parallel`, and the README's section on it).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use engine::Result;
use glow::optim::OptimizerConfig;
use glow::run::{
    CheckpointReason, Event, Interrupt, Run, RunConfig, DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_MINUTES, DEFAULT_MAX_BAD_STEPS, SIGINT, SIGTERM,
};
use glow::train::Trainer;
use glow::Glow;
use glow_rs::cli::{self, DeviceChoice, ModelArgs, OptimizerArg};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Train Glow on CIFAR-10 (the built-in sample by default).
#[derive(Debug, Parser)]
#[command(name = "train_cifar10", version, about)]
struct Args {
    /// A CIFAR-10 directory (data_batch_*.bin, test_batch.bin) or one .bin file.
    /// Default: the built-in 3,000-image sample.
    #[arg(long)]
    #[arg(value_parser = cli::validate::existing_path())]
    data: Option<PathBuf>,
    /// Download the official CIFAR-10 binary archive into this directory and train on it.
    #[arg(long)]
    #[arg(value_parser = cli::validate::output_dir(), conflicts_with = "data")]
    download: Option<PathBuf>,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per step (at most the training split's size).
    #[arg(long, default_value_t = 16)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::positive_usize())]
    batch: usize,
    /// Total training steps (overrides --epochs).
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::u64_in(1, cli::validate::MAX_STEPS))]
    steps: Option<u64>,
    /// Passes over the training split, if --steps is not given.
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::u64_in(1, cli::validate::MAX_EPOCHS))]
    epochs: Option<u64>,
    /// Peak learning rate (> 0).
    #[arg(long, default_value_t = 1e-3)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_positive_f32())]
    lr: f32,
    /// Linear warmup of the learning rate, in steps (0: none).
    #[arg(long, default_value_t = 50)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::any_u32())]
    warmup: u32,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamax)]
    optimizer: OptimizerArg,
    /// L2 weight decay (>= 0).
    #[arg(long, default_value_t = 0.0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    weight_decay: f32,
    /// Clip the global gradient norm to this value (0: off).
    #[arg(long, default_value_t = 50.0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    max_grad_norm: f32,
    /// Random horizontal flips of training images.
    #[arg(long)]
    flip: bool,
    /// Seed of initialisation, data order and noise.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::any_u64())]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/cifar10")]
    #[arg(value_parser = cli::validate::output_dir())]
    out: PathBuf,
    /// Continue from the checkpoint in --out (the model, optimiser and learning rate
    /// come from it; the other flags from this command line).
    #[arg(long)]
    resume: bool,
    /// Evaluate on the test split every this many steps and at the last step (0: never).
    /// A new best test bits/dim is saved to best.safetensors.
    #[arg(long, default_value_t = 500)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::step_interval())]
    eval_every: u64,
    /// Write sample grids every this many steps and at the last step (0: never).
    #[arg(long, default_value_t = 1000)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::step_interval())]
    sample_every: u64,
    /// Write checkpoint.safetensors every this many steps (0: not by step count).
    ///
    /// The default is the default --eval-every, so checkpoints and evaluations land on
    /// the same steps: about two minutes of the default model on a 2-core CPU. A
    /// checkpoint is also written at the start, at the end and on Ctrl-C.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::step_interval())]
    checkpoint_every: u64,
    /// Also write checkpoint.safetensors after the first step at least this many minutes
    /// after the last one (0: not by time).
    ///
    /// The default bounds the work a crash can lose to three minutes whatever the
    /// model's size (a step of the paper's model takes 5 s on a 2-core CPU, so 500
    /// steps would be 45 minutes), for a write of 0.15 s for the default model and 3 s
    /// for the paper's.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_MINUTES as f32)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    checkpoint_minutes: f32,
    /// After this many non-finite steps in a row (each one skipped and logged), roll
    /// back to the checkpoint and halve the learning rate.
    #[arg(long, default_value_t = DEFAULT_MAX_BAD_STEPS)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::positive_u32())]
    max_bad_steps: u32,
    #[command(flatten)]
    anomaly: cli::AnomalyArgs,
}

impl Args {
    /// The run's configuration for `steps` steps in all.
    fn run_config(&self, steps: u64) -> RunConfig {
        RunConfig {
            batch: self.batch,
            flip: self.flip,
            eval_every: self.eval_every,
            sample_every: self.sample_every,
            checkpoint_every: self.checkpoint_every,
            // 0: not by time; so many minutes that no duration holds them: not either.
            checkpoint_interval: (self.checkpoint_minutes > 0.0)
                .then(|| Duration::try_from_secs_f64(f64::from(self.checkpoint_minutes) * 60.0))
                .and_then(|d| d.ok()),
            max_bad_steps: self.max_bad_steps,
            ..RunConfig::new(&self.out, steps)
        }
    }
}

#[allow(dead_code)] // tests/train_interrupt.rs includes this file and calls `main_with`
fn main() {
    std::process::exit(main_with(std::env::args_os().collect()));
}

/// Runs the example on the command line `argv` (program first) and returns its exit
/// status: 0 when done, [`cli::EXIT_FAILURE`] (1) on an error, [`cli::EXIT_USAGE`] (2) on
/// a bad flag (clap exits with it itself for a value outside its rule in
/// `cli::validate`), 130 (143) when stopped by SIGINT (SIGTERM).
pub fn main_with(argv: Vec<OsString>) -> i32 {
    let args = Args::parse_from(&argv);
    match train(&args, &argv) {
        Ok(None) => 0,
        Ok(Some(signal)) => 128 + signal,
        // As cli::exit_on_error prints it, returned rather than exited with.
        Err(e) => match cli::validate::usage_message(&e) {
            Some(msg) => {
                eprintln!("error: {msg}");
                cli::EXIT_USAGE
            }
            None => {
                eprintln!("error: {e}");
                cli::EXIT_FAILURE
            }
        },
    }
}

/// `argv` as a shell command with `--resume` added: what continues this run.
fn resume_command(argv: &[OsString]) -> String {
    let mut words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !words.iter().skip(1).any(|w| w == "--resume") {
        words.push("--resume".into());
    }
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Trains; returns the signal that stopped the run early, if one did.
fn train(args: &Args, argv: &[OsString]) -> Result<Option<i32>> {
    let checkpoint = args.out.join(glow::run::CHECKPOINT_FILE);
    cli::validate::training_run(&cli::validate::TrainingFlags {
        batch: args.batch,
        data: args.data.as_deref(),
        download: args.download.as_deref(),
        resume_from: args.resume.then_some(checkpoint.as_path()),
    })?;
    args.anomaly.apply();
    // Under `mpirun` (built with the `mpi` feature), one rank of a data-parallel run:
    // every rank trains on its shard of each batch and rank 0 alone writes and prints.
    let comm = cli::collective()?;
    let result = train_rank(args, argv, comm.clone());
    if let Err(e) = &result {
        if comm.size() > 1 {
            // The other ranks would wait for this one for ever: end the whole job. A bad
            // flag is the same on every rank: rank 0 says it, as one process would.
            match cli::validate::usage_message(e) {
                Some(msg) if comm.rank() == 0 => eprintln!("error: {msg}"),
                Some(_) => {}
                None => eprintln!("error on rank {} of {}: {e}", comm.rank(), comm.size()),
            }
            let usage = cli::validate::usage_message(e).is_some();
            comm.abort(if usage {
                cli::EXIT_USAGE
            } else {
                cli::EXIT_FAILURE
            });
        }
    }
    result
}

/// [`train`] as rank `comm.rank()` of `comm.size()`.
fn train_rank(
    args: &Args,
    argv: &[OsString],
    comm: std::sync::Arc<dyn glow::parallel::Collective>,
) -> Result<Option<i32>> {
    let (rank, ranks) = (comm.rank(), comm.size());
    cli::validate::batch_splits(args.batch, ranks)?;
    let (device, why) = cli::pick_device_for_rank(args.device, rank, ranks)?;
    eprintln!("device: {} ({why})", device.name());
    let barrier = || -> Result<()> {
        if ranks > 1 {
            comm.sum_in_place(&mut [0.0])?;
        }
        Ok(())
    };
    let data_path = match &args.download {
        // Rank 0 downloads; the others wait for it, then find the files there.
        Some(dir) => {
            if rank != 0 {
                barrier()?;
            }
            let path = glow::download::download_cifar10(dir, glow::download::CIFAR10_URL)?;
            if rank == 0 {
                barrier()?;
            }
            Some(path)
        }
        None => args.data.clone(),
    };
    let data = cli::load_data(data_path.as_deref())?;
    if rank == 0 {
        eprintln!("{}", data.describe());
    }
    let per_epoch = (data.train.len() / args.batch) as u64;
    let total = args
        .steps
        .unwrap_or_else(|| args.epochs.unwrap_or(1) * per_epoch);
    let config = args.run_config(total);

    let mut run = if args.resume {
        let path = config.checkpoint_path();
        let mut run = Run::resume_with(config, &device, comm.clone())?;
        // Stored or reversible backward is a choice of the run, not of the model.
        run.trainer.model.set_memory(args.model.memory.into());
        eprintln!("resumed {} at step {}", path.display(), run.trainer.step);
        run
    } else {
        let model = Glow::new(args.model.config(args.seed), &device)?;
        let opt = OptimizerConfig {
            kind: args.optimizer.into(),
            lr: args.lr,
            warmup: args.warmup,
            weight_decay: args.weight_decay,
            max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
            ..OptimizerConfig::default()
        };
        Run::new(
            config,
            Trainer::new(model, opt, args.seed).with_collective(comm.clone()),
        )?
    };
    if rank != 0 {
        // The other ranks train in silence; rank 0 reports for the whole run.
        let summary = run.run(&data, &Interrupt::on_signals()?, |_| {})?;
        return Ok(summary.interrupted);
    }
    if ranks > 1 {
        eprintln!(
            "data-parallel: {ranks} ranks, {} images each per step of {}",
            args.batch / ranks,
            args.batch
        );
    }
    let model = &run.trainer.model;
    let cfg = model.config();
    eprintln!(
        "model: L={} K={} hidden={} {:?} {:?} learn_top={} y_condition={}, {} parameters",
        cfg.levels,
        cfg.depth,
        cfg.hidden,
        cfg.coupling,
        cfg.permutation,
        cfg.learn_top,
        cfg.y_condition,
        model.num_parameters()
    );

    let interactive = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .expect("valid template"),
    );
    let batch = args.batch as f64;
    let show = |event: &Event| {
        match event {
        Event::Started { step, .. } => bar.set_position(*step),
        Event::Step {
            stats: s,
            images_per_sec: rate,
        } => {
            bar.set_position(s.step);
            bar.set_message(format!("{:.3} bits/dim, {rate:.1} img/s", s.bpd));
            if !interactive && s.step % 50 == 0 {
                // No terminal (a log file, CI): the bar is hidden, so print a plain line.
                let eta = (total - s.step) as f64 * batch / rate;
                eprintln!(
                    "step {}/{total}: {:.3} bits/dim, {rate:.1} images/s, ETA {eta:.0} s",
                    s.step, s.bpd
                );
            }
        }
        Event::Skipped { skipped, in_a_row } => bar.println(format!(
            "step {}: skipped, {} ({in_a_row} in a row)",
            skipped.step, skipped.why
        )),
        Event::RolledBack {
            from_step,
            to_step,
            lr,
        } => bar.println(format!(
            "step {from_step}: rolled back to the checkpoint at step {to_step}, learning rate now {lr:e}"
        )),
        Event::Evaluated {
            step,
            train_bpd,
            test_bpd,
            best,
        } => bar.println(format!(
            "step {step}: train {} bits/dim, test {test_bpd:.3} bits/dim{}",
            train_bpd.map_or("n/a".into(), |v| format!("{v:.3}")),
            if *best { " (best so far)" } else { "" }
        )),
        Event::Checkpoint { step, path, reason } => {
            if !matches!(reason, CheckpointReason::Best) && !interactive {
                eprintln!("step {step}: wrote {} ({})", path.display(), reason.name());
            }
        }
        Event::Samples { .. } | Event::Interrupted { .. } => {}
    }
    };
    // From here on the first Ctrl-C stops the run cleanly; before, it kills the process
    // at once, and nothing is lost.
    let interrupt = Interrupt::on_signals()?;
    let summary = run.run(&data, &interrupt, show)?;
    bar.finish_and_clear();

    let out = args.out.display();
    let test = summary.test_bpd.map_or("n/a".into(), |v| format!("{v:.3}"));
    let train = summary
        .train_bpd
        .map_or("n/a".into(), |v| format!("{v:.3}"));
    match summary.interrupted {
        Some(signal) => {
            eprintln!(
                "interrupted by {} at step {}; the checkpoint in {out} holds step {}",
                signal_name(signal),
                summary.step,
                summary.checkpoint_step
            );
            let launcher = if ranks > 1 {
                format!("mpirun -np {ranks} ")
            } else {
                String::new()
            };
            eprintln!("resume with:\n  {launcher}{}", resume_command(argv));
        }
        None => eprintln!(
            "done: {} steps, train {train} bits/dim (last 50 steps), test {test} bits/dim, {:.1} images/s; outputs in {out}",
            summary.step, summary.images_per_sec
        ),
    }
    if summary.skipped_steps > 0 {
        eprintln!(
            "{} non-finite steps were skipped and {} rollbacks made (see {})",
            summary.skipped_steps,
            summary.rollbacks,
            run.config.metrics_path().display()
        );
    }
    let mut line = json!({
        "steps": summary.step,
        "train_bpd": summary.train_bpd,
        "test_bpd": summary.test_bpd,
        "best_test_bpd": summary.best_test_bpd,
        "images_per_sec": summary.images_per_sec,
        "device": device.name(),
        "ranks": summary.ranks,
    });
    if let Some(signal) = summary.interrupted {
        line["interrupted"] = json!(signal_name(signal));
    }
    cli::print_summary(line);
    Ok(summary.interrupted)
}

//! Train Glow on CIFAR-10.
//!
//! With no arguments it trains the L=3, K=8, hidden-128 model on the built-in 3,000-image
//! sample (2,700 for training, the last 300 held out), shows progress, and writes into
//! `--out` (default `runs/cifar10`): `checkpoint.safetensors`, `metrics.jsonl`,
//! `loss_curve.png` and sample grids at the paper's temperatures under `samples/`.
//! It ends with one JSON line on stdout.
//!
//! ```sh
//! cargo run --release --example train_cifar10
//! cargo run --release --example train_cifar10 -- --download data/cifar10 --steps 20000
//! cargo run --release --example train_cifar10 -- --resume   # continue runs/cifar10
//! ```

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use engine::{Error, Result};
use glow::checkpoint::{resume, save_checkpoint, TrainState};
use glow::optim::OptimizerConfig;
use glow::picture::{save_loss_curve, PlotOptions};
use glow::train::{batch_for_step, evaluate, Trainer};
use glow::Glow;
use glow_rs::cli::{self, DeviceChoice, ModelArgs, OptimizerArg};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Train Glow on CIFAR-10 (the built-in sample by default).
#[derive(Debug, Parser)]
#[command(version, about)]
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
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Evaluate on the test split (and save a checkpoint) every this many steps, and at
    /// the end (at least 1: 0 is refused, not read as "never").
    #[arg(long, default_value_t = 500)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::step_interval())]
    eval_every: u64,
    /// Write sample grids every this many steps, and at the end (at least 1).
    #[arg(long, default_value_t = 1000)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::step_interval())]
    sample_every: u64,
    #[command(flatten)]
    anomaly: cli::AnomalyArgs,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::invalid("train_cifar10", format!("{}: {e}", path.display()))
}

/// `(step, value)` points of a plotted series.
type Curve = Vec<(f64, f64)>;

/// `(step, train bpd)` and `(step, test bpd)` points of a metrics log up to step `until`,
/// and the text of those lines.
fn read_curves(path: &Path, until: u64) -> (Curve, Curve, String) {
    let (mut train, mut test, mut kept) = (Vec::new(), Vec::new(), String::new());
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_u64().filter(|&s| s <= until) else {
            continue;
        };
        kept.push_str(line);
        kept.push('\n');
        if let Some(b) = v["test_bpd"].as_f64() {
            test.push((step as f64, b));
        } else if let Some(b) = v["bpd"].as_f64() {
            train.push((step as f64, b));
        }
    }
    (train, test, kept)
}

fn run(args: Args) -> Result<()> {
    cli::validate::training_run(&cli::validate::TrainingFlags {
        batch: args.batch,
        data: args.data.as_deref(),
        download: args.download.as_deref(),
        resume_from: args
            .resume
            .then(|| args.out.join("checkpoint.safetensors"))
            .as_deref(),
    })?;
    args.anomaly.apply();
    let (device, why) = cli::pick_device(args.device)?;
    eprintln!("device: {} ({why})", device.name());
    let data_path = match &args.download {
        Some(dir) => Some(glow::download::download_cifar10(
            dir,
            glow::download::CIFAR10_URL,
        )?),
        None => args.data.clone(),
    };
    let data = cli::load_data(data_path.as_deref())?;
    eprintln!("{}", data.describe());
    if data.train.len() < args.batch || args.batch == 0 {
        return Err(Error::invalid(
            "train_cifar10",
            format!(
                "--batch {} needs at least that many training images (have {})",
                args.batch,
                data.train.len()
            ),
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| io_err(&args.out, e))?;
    let ckpt_path = args.out.join("checkpoint.safetensors");

    let mut trainer = if args.resume {
        let (model, optimizer, state) = resume(&ckpt_path, &device)?;
        eprintln!("resumed {} at step {}", ckpt_path.display(), state.step);
        Trainer {
            model,
            optimizer,
            seed: state.seed,
            step: state.step,
        }
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
        Trainer::new(model, opt, args.seed)
    };
    let cfg = trainer.model.config().clone();
    eprintln!(
        "model: L={} K={} hidden={} {:?} {:?} learn_top={} y_condition={}, {} parameters",
        cfg.levels,
        cfg.depth,
        cfg.hidden,
        cfg.coupling,
        cfg.permutation,
        cfg.learn_top,
        cfg.y_condition,
        trainer.model.num_parameters()
    );
    let per_epoch = (data.train.len() / args.batch) as u64;
    let total = args
        .steps
        .unwrap_or_else(|| args.epochs.unwrap_or(1) * per_epoch);

    let metrics_path = args.out.join("metrics.jsonl");
    // On resume, the log and the curves keep what came before the checkpoint; lines the
    // interrupted run wrote after it are dropped, since those steps run again.
    let (mut train_curve, mut test_curve) = if args.resume {
        let (train, test, kept) = read_curves(&metrics_path, trainer.step);
        std::fs::write(&metrics_path, kept).map_err(|e| io_err(&metrics_path, e))?;
        (train, test)
    } else {
        (Vec::new(), Vec::new())
    };
    let mut metrics = OpenOptions::new()
        .create(true)
        .append(args.resume)
        .write(true)
        .truncate(!args.resume)
        .open(&metrics_path)
        .map_err(|e| io_err(&metrics_path, e))?;
    let mut log = |line: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{line}").map_err(|e| io_err(&metrics_path, e))
    };

    let interactive = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_position(trainer.step);
    let mut recent: Vec<f32> = Vec::new();
    let mut last_test = None;
    let started = Instant::now();
    let mut images_seen = 0usize;

    let evaluate_now = |model: &Glow| -> Result<f64> {
        let batches = data.test.sequential_batches(64);
        Ok(evaluate(model, batches, 0, false, |_| {})?.mean_bpd)
    };

    while trainer.step < total {
        let (mut pixels, labels) =
            batch_for_step(&data.train, args.batch, trainer.seed, trainer.step)?;
        if args.flip {
            glow::data::random_hflip(&mut pixels, [3, 32, 32], trainer.seed, trainer.step)?;
        }
        let s = trainer.step(&pixels, &labels)?;
        images_seen += labels.len();
        recent.push(s.bpd);
        train_curve.push((s.step as f64, f64::from(s.bpd)));
        let rate = images_seen as f64 / started.elapsed().as_secs_f64();
        bar.set_position(s.step);
        bar.set_message(format!("{:.3} bits/dim, {rate:.1} img/s", s.bpd));
        if !interactive && s.step % 50 == 0 {
            // No terminal (a log file, CI): the bar is hidden, so print a plain line.
            let eta = (total - s.step) as f64 * args.batch as f64 / rate;
            eprintln!(
                "step {}/{total}: {:.3} bits/dim, {rate:.1} images/s, ETA {eta:.0} s",
                s.step, s.bpd
            );
        }
        log(
            json!({"step": s.step, "loss": s.loss, "bpd": s.bpd, "lr": s.lr, "grad_norm": s.grad_norm, "images_per_sec": rate}),
        )?;

        let at_end = s.step == total;
        if s.step % args.eval_every == 0 || at_end {
            let test_bpd = evaluate_now(&trainer.model)?;
            let train_bpd = recent.iter().map(|&v| f64::from(v)).sum::<f64>() / recent.len() as f64;
            recent.clear();
            test_curve.push((s.step as f64, test_bpd));
            last_test = Some(test_bpd);
            bar.println(format!(
                "step {}: train {train_bpd:.3} bits/dim, test {test_bpd:.3} bits/dim",
                s.step
            ));
            log(json!({"step": s.step, "train_bpd": train_bpd, "test_bpd": test_bpd}))?;
            let state = TrainState {
                seed: trainer.seed,
                step: trainer.step,
                epoch: trainer.step / per_epoch,
                position_in_epoch: (trainer.step % per_epoch) * args.batch as u64,
            };
            save_checkpoint(&ckpt_path, &trainer.model, &trainer.optimizer, &state)?;
            save_loss_curve(
                args.out.join("loss_curve.png"),
                &[
                    ("train bits/dim", &train_curve),
                    ("test bits/dim", &test_curve),
                ],
                &PlotOptions::default(),
            )?;
        }
        if s.step % args.sample_every == 0 || at_end {
            let dir = args.out.join("samples");
            glow::picture::save_sample_grids(
                &trainer.model,
                &dir,
                &format!("step{:06}", s.step),
                16,
                0,
            )?;
        }
    }
    bar.finish_and_clear();
    let rate = images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let train_bpd = train_curve.iter().rev().take(50).map(|p| p.1).sum::<f64>()
        / train_curve.len().clamp(1, 50) as f64;
    eprintln!(
        "done: {} steps, train {train_bpd:.3} bits/dim (last 50 steps), test {} bits/dim, {rate:.1} images/s; outputs in {}",
        trainer.step,
        last_test.map_or("n/a".into(), |v| format!("{v:.3}")),
        args.out.display()
    );
    cli::print_summary(json!({
        "steps": trainer.step,
        "train_bpd": train_bpd,
        "test_bpd": last_test,
        "images_per_sec": rate,
        "device": device.name(),
    }));
    Ok(())
}

//! Train Glow on CIFAR-10, or with `--dataset` on another dataset (the same program is
//! the `train` example, `examples/train.rs`).
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
//! cargo run --release --example train -- --dataset mnist --data data/mnist  # runs/mnist
//! ```
//!
//! A run folder holds one run: a fresh run in a folder that holds one is refused (exit 2)
//! unless `--overwrite` moves the old run aside, and a folder that another run is
//! writing is refused too (`glow::run::folder`). `--resume` keeps the checkpoint's model,
//! seed, optimiser and data and refuses flags that say otherwise (`glow_rs::cli::resume`).
//!
//! Built with `--features mpi` and started by `mpirun -np N`, each process is one rank of
//! a data-parallel run: `--batch` is the global batch, each rank trains on its shard, and
//! rank 0 alone prints and writes (`glow::parallel`, and the README's section on it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use glow::augment::{Augmentation, Transform};
use glow::optim::OptimizerConfig;
use glow::run::folder::{Claim, RunFolder};
use glow::run::{
    Interrupt, Run, RunConfig, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_MINUTES,
    DEFAULT_MAX_BAD_STEPS, SIGINT, SIGTERM,
};
use glow::train::Trainer;
use glow::Glow;
use glow_rs::cli::resume::Asked;
use glow_rs::cli::{self, CliError, CliResult, DeviceChoice, ModelArgs, OptimizerArg};
use serde_json::json;

/// Train Glow on CIFAR-10 (the built-in sample by default).
///
/// The defaults are a small, fast recipe for a CPU (L=3, K=8, 128 channels, batch 16, no
/// augmentation or averaging); --preset paper trains as openai/glow does on CIFAR-10 and
/// --preset port as the PyTorch port's defaults do (see --preset).
#[derive(Debug, Parser)]
#[command(name = "train_cifar10", version, about, long_about)]
struct Args {
    /// Start from a recipe (paper or port): its flags are put before yours, and a flag
    /// you give wins.
    #[arg(long_help = cli::preset::long_help())]
    #[arg(long, value_enum)]
    preset: Option<cli::preset::PresetArg>,
    /// The dataset's files: for CIFAR-10 a directory (data_batch_*.bin, test_batch.bin)
    /// or one .bin file, default the built-in 3,000-image sample; for the others, their
    /// folder (see --dataset).
    #[arg(long)]
    #[arg(value_parser = cli::validate::existing_path())]
    data: Option<PathBuf>,
    #[command(flatten)]
    dataset: cli::DatasetArgs,
    /// Download the dataset's official files into this directory (checked by size and
    /// MD5) and train on them: cifar10, cifar100, mnist and svhn.
    #[arg(long)]
    #[arg(value_parser = cli::validate::output_dir(), conflicts_with = "data")]
    download: Option<PathBuf>,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per step (at most the training split's size). The default is small for a
    /// CPU; the paper's is 64.
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
    /// Linear warmup of the learning rate, in steps (0: none). The default is short for
    /// speed; the paper warms up over 10 epochs (--warmup-epochs 10).
    #[arg(long, default_value_t = 50)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::any_u32())]
    warmup: u32,
    /// Linear warmup of the learning rate, in epochs of the training split (>= 0;
    /// replaces --warmup).
    #[arg(long, conflicts_with = "warmup")]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    warmup_epochs: Option<f32>,
    /// Adam's/Adamax's β1, the first moment's decay, in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::unit_interval_f32())]
    beta1: f32,
    /// β2, the second moment's decay, in (0, 1). The paper's code sets it from
    /// --polyak-epochs instead.
    #[arg(long, default_value_t = 0.999)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::open_unit_interval_f32())]
    beta2: f32,
    /// openai/glow's rule for β2: 1 - 1/(steps per epoch × this), an average over about
    /// this many epochs (> 0; replaces --beta2, and sets --ema polyak's decay).
    #[arg(long, conflicts_with = "beta2")]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_positive_f32())]
    polyak_epochs: Option<f32>,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamax)]
    optimizer: OptimizerArg,
    /// L2 weight decay (>= 0).
    #[arg(long, default_value_t = 0.0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    weight_decay: f32,
    /// Clip the global gradient norm to this value (0: off). The default guards the
    /// fast recipe's short warmup; the paper clips nothing.
    #[arg(long, default_value_t = 50.0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    max_grad_norm: f32,
    /// Clip every gradient element into [-v, v] before the norm clip (0: off), as the
    /// port's --max_grad_clip.
    #[arg(long, default_value_t = 0.0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::finite_non_negative_f32())]
    max_grad_value: f32,
    /// Keep an exponential moving average of the weights with this decay (0: off), or
    /// "polyak" for openai/glow's 1 - 1/(steps per epoch × --polyak-epochs, default 1).
    /// With it on, evaluations report both test bits/dim, and best.safetensors, the
    /// sample grids and the examples that read a checkpoint use the averaged weights.
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::ema())]
    ema: Option<cli::validate::EmaArg>,
    /// Images the ActNorms' data-dependent initialisation sees before the first step of
    /// a fresh run: the first of the first epoch's order, shared out between the ranks.
    /// Default: 256 (the paper's code), or the training split when it is smaller. No
    /// effect on --resume.
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::positive_usize())]
    init_batch: Option<usize>,
    /// Shift each training image by a random whole number of pixels, up to PX along each
    /// axis, the uncovered border repeating the edge (0: off; the flag alone: 10% of the
    /// width, 3 px on CIFAR-10, as the paper's code and the port). Off by default.
    // No hyphen values: the flag alone must not swallow the next flag as its value.
    #[arg(long, value_name = "PX", num_args = 0..=1)]
    #[arg(value_parser = cli::validate::usize_in(0, 4096))]
    translate: Option<Option<usize>>,
    /// Mirror each training image left-right with probability 1/2. Off by default.
    #[arg(long, overrides_with = "no_flip")]
    flip: bool,
    /// No flips (undoes a preset's --flip).
    #[arg(long, overrides_with = "flip")]
    no_flip: bool,
    /// Train on N shards of each batch at once, as N threads of this process, each on an
    /// equal share of the cores, their gradients summed before each update (1-64; the
    /// batch must split evenly). The losses are those of one shard up to rounding
    /// (docs/measurements.md has the speed); under mpirun each process is one shard.
    #[arg(long, default_value_t = 1)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::usize_in(1, 64))]
    shards: usize,
    /// Seed of initialisation, data order and noise.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = cli::validate::any_u64())]
    seed: u64,
    /// The run folder: one run's checkpoints, metrics and pictures. A fresh run refuses a
    /// folder that holds a run (see --resume and --overwrite), and any folder another
    /// run is writing. Default: runs/ and the --dataset's name (runs/cifar10, runs/mnist…).
    #[arg(long, default_value = "runs/cifar10", hide_default_value = true)]
    #[arg(value_parser = cli::validate::output_dir())]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint.
    ///
    /// The model, --seed, --optimizer and the data come from the checkpoint: giving one
    /// of them (--levels, --depth, --hidden, --coupling, --permutation, --learn-top,
    /// --y-condition, --y-weight, --n-bits, --seed, --optimizer, or --data/--download
    /// naming other images than a checkpoint that recorded its data) with another value
    /// is refused. --lr, --warmup (--warmup-epochs), --beta1, --beta2 (--polyak-epochs),
    /// --weight-decay, --max-grad-norm, --max-grad-value and --ema are the checkpoint's
    /// unless given, and then replace it. The rest may change on resume: --steps,
    /// --epochs, --batch, --init-batch (no effect then), --translate, --flip, --tensorboard,
    /// --eval-every, --matmul-precision, --shards,
    /// --sample-every, --checkpoint-every, --checkpoint-minutes, --max-bad-steps,
    /// --device, --memory, --detect-anomaly. With --steps at or below the checkpoint's
    /// step there is nothing to do: it says so and exits 0.
    #[arg(long)]
    resume: bool,
    /// Start afresh in an --out that holds a run, moving that run aside into a sibling
    /// folder named after it and the time (printed); nothing is deleted.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Also write TensorBoard event files into --out (`tensorboard --logdir runs/`): the
    /// training and test figures of metrics.jsonl as scalars and the sample grids as
    /// images.
    #[arg(long)]
    tensorboard: bool,
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
    /// model's size (500 steps of the paper's model take most of an hour on a CPU), for
    /// a write of a few seconds at most (docs/measurements.md).
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
    #[command(flatten)]
    precision: cli::PrecisionArgs,
}

impl Args {
    /// The transforms of --translate and --flip for images `width` pixels wide.
    fn augmentation(&self, width: usize) -> Augmentation {
        let mut transforms = Vec::new();
        match self.translate {
            Some(None) => transforms.push(Transform::port_translate(width)),
            Some(Some(max)) if max > 0 => transforms.push(Transform::Translate { max }),
            _ => {}
        }
        if self.flip {
            transforms.push(Transform::HFlip);
        }
        Augmentation { transforms }
    }

    /// The optimiser's settings, with `per_epoch` training steps an epoch (for the
    /// settings given in epochs). A Polyak rule that gives no decay in (0, 1) for this
    /// data is a usage error.
    fn optimizer(&self, per_epoch: u64) -> CliResult<OptimizerConfig> {
        let epochs = self.polyak_epochs.unwrap_or(1.0);
        let wanted =
            self.polyak_epochs.is_some() || matches!(self.ema, Some(cli::validate::EmaArg::Polyak));
        let polyak = glow::optim::polyak_beta2(per_epoch, f64::from(epochs));
        if wanted && polyak.is_none() {
            return Err(cli::usage_error(format!(
                "--polyak-epochs {epochs} with {per_epoch} steps an epoch gives 1 - 1/{} as \
                 β2, which is not in (0, 1); give another --polyak-epochs, or --beta2 and \
                 --ema as numbers",
                per_epoch as f64 * f64::from(epochs)
            )));
        }
        let beta2 = match self.polyak_epochs {
            Some(_) => polyak.unwrap_or(self.beta2),
            None => self.beta2,
        };
        let warmup = match self.warmup_epochs {
            Some(e) => (f64::from(e) * per_epoch as f64)
                .round()
                .min(f64::from(u32::MAX)) as u32,
            None => self.warmup,
        };
        let ema_decay = match self.ema {
            None | Some(cli::validate::EmaArg::Decay(0.0)) => None,
            Some(cli::validate::EmaArg::Decay(d)) => Some(d),
            Some(cli::validate::EmaArg::Polyak) => polyak,
        };
        Ok(OptimizerConfig {
            kind: self.optimizer.into(),
            lr: self.lr,
            warmup,
            betas: (self.beta1, beta2),
            weight_decay: self.weight_decay,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            max_grad_value: (self.max_grad_value > 0.0).then_some(self.max_grad_value),
            ema_decay,
            ..OptimizerConfig::default()
        })
    }

    /// The run's configuration for `steps` steps in all, initialising on `init_batch`
    /// images of `width` pixels.
    fn run_config(&self, steps: u64, init_batch: usize, width: usize) -> RunConfig {
        RunConfig {
            init_batch: Some(init_batch),
            batch: self.batch,
            augmentation: self.augmentation(width),
            tensorboard: self.tensorboard,
            eval_every: self.eval_every,
            sample_every: self.sample_every,
            checkpoint_every: self.checkpoint_every,
            // 0: not by time; so many minutes that no duration holds them: not either.
            checkpoint_interval: (self.checkpoint_minutes > 0.0)
                .then(|| Duration::try_from_secs_f64(f64::from(self.checkpoint_minutes) * 60.0))
                .and_then(|d| d.ok()),
            max_bad_steps: self.max_bad_steps,
            overwrite: self.overwrite,
            ..RunConfig::new(&self.out, steps)
        }
    }
}

#[allow(dead_code)] // tests/train_interrupt.rs includes this file and calls `main_with`
pub fn main() {
    std::process::exit(main_with(std::env::args_os().collect()));
}

/// Runs the example on the command line `argv` (program first) and returns its exit
/// status: 0 when done, [`cli::EXIT_FAILURE`] (1) on an error, [`cli::EXIT_USAGE`] (2) on
/// a bad flag (clap exits with it itself for a value outside its rule in
/// `cli::validate`), 130 (143) when stopped by SIGINT (SIGTERM).
pub fn main_with(argv: Vec<OsString>) -> i32 {
    // One program, two names (`train`, `train_cifar10`): --help and --version say which.
    let name = match argv
        .first()
        .and_then(|p| PathBuf::from(p).file_stem().map(|s| s.to_owned()))
    {
        Some(stem) if stem.to_string_lossy().starts_with("train_cifar10") => "train_cifar10",
        _ => "train",
    };
    let command = || Args::command().name(name);
    let mut matches = command().get_matches_from(&argv);
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut preset = None;
    if let Some(p) = args.preset {
        // The preset's flags go before the user's, bar those the user gave.
        let user = |long: &str| {
            matches.value_source(&long.replace('-', "_")) == Some(ValueSource::CommandLine)
        };
        let held = |long: &str| cli::resume::held_by_checkpoint(long);
        let expanded = cli::preset::expand(&argv, p, &user, args.resume, &held);
        matches = command().get_matches_from(&expanded.argv);
        args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        preset = Some((p, expanded));
    }
    // Whether the flag with this long name was on the (expanded) command line.
    let given = |long: &str| {
        matches.value_source(&long.replace('-', "_")) == Some(ValueSource::CommandLine)
    };
    if !given("out") {
        args.out = PathBuf::from("runs").join(args.dataset.kind.flag());
        if args.out.exists() && !args.out.is_dir() {
            let e = cli::usage_error(format!(
                "--out (default {}) must be a directory (or not exist yet), got a file",
                args.out.display()
            ));
            return cli::report(&e);
        }
    }
    match train(&args, &argv, &given, preset.as_ref()) {
        Ok(None) => 0,
        Ok(Some(signal)) => 128 + signal,
        // As cli::exit_on_error prints it, returned rather than exited with.
        Err(e) => cli::report(&e),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Whether a flag (by long name) was on the command line; shared by the shards' threads.
type Given<'a> = dyn Fn(&str) -> bool + Sync + 'a;

/// Trains; returns the signal that stopped the run early, if one did. `given` says
/// whether a flag (by long name) was on the command line.
fn train(
    args: &Args,
    argv: &[OsString],
    given: &Given<'_>,
    preset: Option<&(cli::preset::PresetArg, cli::preset::Expanded)>,
) -> CliResult<Option<i32>> {
    let checkpoint = args.out.join(glow::run::CHECKPOINT_FILE);
    cli::validate::training_run(&cli::validate::TrainingFlags {
        batch: args.batch,
        data: args.data.as_deref(),
        dataset: &args.dataset,
        download: args.download.as_deref(),
        resume_from: args.resume.then_some(checkpoint.as_path()),
    })?;
    args.anomaly.apply();
    // Under `mpirun` (built with the `mpi` feature), one rank of a data-parallel run:
    // every rank trains on its shard of each batch and rank 0 alone writes and prints.
    let comm = glow::parallel::from_env()?;
    if args.shards > 1 {
        if comm.size() > 1 {
            return Err(cli::usage_error(
                "--shards runs the ranks as threads of one process; under mpirun each \
                 process is one rank already (leave --shards out)",
            ));
        }
        cli::validate::batch_splits(args.batch, args.shards)?;
        return train_shards(args, argv, given, preset);
    }
    train_as(args, argv, given, preset, comm)
}

/// [`train`] with `--shards N`: N ranks as threads of this process, each on its own rayon
/// pool of an equal share of the threads, joined by `glow::parallel::InProcess`
/// (`glow::parallel::run_ranks`); returns rank 0's outcome, or the first rank's own
/// failure.
fn train_shards(
    args: &Args,
    argv: &[OsString],
    given: &Given<'_>,
    preset: Option<&(cli::preset::PresetArg, cli::preset::Expanded)>,
) -> CliResult<Option<i32>> {
    use glow::parallel::{run_ranks, InProcess};
    let threads = (rayon::current_num_threads() / args.shards).max(1);
    run_ranks(
        args.shards,
        threads,
        "--shards",
        |comm| {
            // Thread-local: set on the thread that runs this shard's ops.
            if args.anomaly.detect_anomaly {
                engine::anomaly::set_enabled(true);
            }
            train_as(args, argv, given, preset, comm)
        },
        // A usage error (a refusal only rank 0 meets) is a rank's own failure.
        |e| matches!(e, CliError::Failed(e) if InProcess::is_another_ranks_failure(e)),
    )
}

/// [`train`] as rank `comm.rank()` of `comm.size()`, ending the whole job when a rank of
/// several fails.
fn train_as(
    args: &Args,
    argv: &[OsString],
    given: &Given<'_>,
    preset: Option<&(cli::preset::PresetArg, cli::preset::Expanded)>,
    comm: Arc<dyn glow::parallel::Collective>,
) -> CliResult<Option<i32>> {
    if let (Some((p, e)), 0) = (preset, comm.rank()) {
        eprintln!("preset {}: {}", p.name(), e.applied.join(" "));
        if !e.overridden.is_empty() {
            eprintln!("  given instead: {}", e.overridden.join(", "));
        }
        if !e.from_checkpoint.is_empty() {
            eprintln!(
                "  from the checkpoint instead: {}",
                e.from_checkpoint.join(", ")
            );
        }
    }
    let result = train_rank(args, argv, given, preset.map(|p| &p.1), comm.clone());
    if let Err(e) = &result {
        if args.shards > 1 {
            // Shards of this process: the caller tells the others and reports once.
            return result;
        }
        if comm.size() > 1 {
            // The other ranks would wait for this one for ever: end the whole job. A bad
            // flag is the same on every rank: rank 0 says it, as one process would.
            match e {
                CliError::Usage(msg) if comm.rank() == 0 => eprintln!("error: {msg}"),
                CliError::Usage(_) => {}
                CliError::Failed(e) => {
                    eprintln!("error on rank {} of {}: {e}", comm.rank(), comm.size())
                }
            }
            comm.abort(e.exit_status());
        }
    }
    result
}

/// [`train`] as rank `comm.rank()` of `comm.size()`.
fn train_rank(
    args: &Args,
    argv: &[OsString],
    given: &Given<'_>,
    preset: Option<&cli::preset::Expanded>,
    comm: std::sync::Arc<dyn glow::parallel::Collective>,
) -> CliResult<Option<i32>> {
    let (rank, ranks) = (comm.rank(), comm.size());
    cli::validate::batch_splits(args.batch, ranks)?;
    let data_path = match &args.download {
        // Rank 0 downloads; the others wait for it, then find the files there.
        Some(dir) => Some(args.dataset.kind.download(dir, comm.as_ref())?),
        None => args.data.clone(),
    };
    let data = args.dataset.load(data_path.as_deref())?;
    let data = data.as_ref();
    cli::validate::data_fits(
        args.batch,
        data_path.as_deref(),
        data.train().len(),
        data.test().len(),
    )?;
    let per_epoch = (data.train().len() / args.batch) as u64;
    let total = args
        .steps
        .unwrap_or_else(|| args.epochs.unwrap_or(1) * per_epoch);
    // A preset's --init-batch is a default, bounded by the data as the built-in one is.
    let (init_given, init_default) = match args.init_batch {
        Some(n) if preset.is_some_and(|e| e.applied_flag("init-batch")) => (None, n),
        given => (given, glow::run::DEFAULT_INIT_BATCH),
    };
    let init_batch =
        cli::validate::init_batch(init_given, init_default, data.train().len(), ranks)?;
    let [_, height, width] = data.image_shape();
    if let Some(Some(px)) = args
        .translate
        .filter(|t| t.is_some_and(|px| px >= height.min(width)))
    {
        return Err(cli::usage_error(format!(
            "--translate must be below the images' smaller side, {}, got {px}",
            height.min(width)
        )));
    }
    let config = args.run_config(total, init_batch, width);
    cli::validate::levels_fit(args.model.levels, data.image_shape())?;
    let model_config = args.model.config(args.seed, data);
    let opt = args.optimizer(per_epoch)?;
    let asked = Asked {
        model: &model_config,
        optimizer: &opt,
        given,
        train: data.train(),
    };
    if args.resume {
        if let Some(step) = cli::resume::check(&asked, &args.out, total)? {
            if rank == 0 {
                let asked_for = match args.steps {
                    Some(s) => format!("--steps {s}"),
                    None => format!("{} epoch(s) of {per_epoch} steps", args.epochs.unwrap_or(1)),
                };
                eprintln!(
                    "{} is at step {step} already, at or past the {total} steps asked for \
                     ({asked_for}): nothing to train; give a larger --steps to go on",
                    args.out.display()
                );
                cli::print_summary(json!({"steps": step, "trained_steps": 0}));
            }
            return Ok(None);
        }
    }
    // Rank 0 owns the folder, and claims it once the command line has been checked
    // against the data (and, to resume, against the checkpoint), before any work: a
    // refused command leaves no folder behind and touches none.
    let how = match (args.resume, args.overwrite) {
        (true, _) => Claim::Resume,
        (false, true) => Claim::Overwrite,
        (false, false) => Claim::Fresh,
    };
    let folder = match rank {
        0 => Some(RunFolder::claim(&args.out, how)?),
        _ => None,
    };
    if rank == 0 {
        eprintln!("{}", data.describe());
    }
    let (device, why) = glow::device::pick_for_rank(args.device.into(), rank, ranks)?;
    if rank == 0 || args.shards == 1 {
        // Shards of one process share its device: rank 0 says which.
        eprintln!("device: {} ({why})", device.name());
    }
    if rank == 0 || args.precision.matmul_precision == cli::PrecisionArg::F32 {
        args.precision.apply(&device);
    } else {
        // Every rank sets the process's precision; rank 0 says what it got.
        engine::precision::set_matmul_precision(engine::precision::MatmulPrecision::Bf16);
    }

    let mut run = start(args, folder, config, &device, comm.clone(), &asked)?;
    if rank != 0 {
        // The other ranks train in silence; rank 0 reports for the whole run.
        let summary = run.run(data, &Interrupt::on_signals()?, |_| {})?;
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
    let o = &run.trainer.optimizer.config;
    let off = |v: Option<f32>| v.map_or("off".to_string(), |v| v.to_string());
    eprintln!(
        "training: batch {}, augmentation {}, {:?} lr {} warmup {} steps, betas ({}, {}), \
         weight decay {}, clip norm {} value {}, EMA {}",
        args.batch,
        run.config.augmentation.describe(),
        o.kind,
        o.lr,
        o.warmup,
        o.betas.0,
        o.betas.1,
        o.weight_decay,
        off(o.max_grad_norm),
        off(o.max_grad_value),
        off(o.ema_decay)
    );

    let progress = cli::progress::Progress::new(total, args.batch);
    // From here on the first Ctrl-C stops the run cleanly; before, it kills the process
    // at once, and nothing is lost.
    let interrupt = Interrupt::on_signals()?;
    let summary = run.run(data, &interrupt, |e| progress.show(e))?;
    progress.finish();

    finish(args, argv, &run, &summary, &device, ranks);
    Ok(summary.interrupted)
}

/// The run `args` asks for on `device`: resumed from the checkpoint in `--out`, with the
/// optimiser settings `asked` gives replacing the checkpoint's, or a fresh one.
fn start(
    args: &Args,
    folder: Option<RunFolder>,
    config: RunConfig,
    device: &engine::Device,
    comm: std::sync::Arc<dyn glow::parallel::Collective>,
    asked: &Asked,
) -> CliResult<Run> {
    let writer = comm.rank() == 0;
    if args.resume {
        let path = config.checkpoint_path();
        let mut run = Run::resume_in(folder, config, device, comm)?;
        // Stored or reversible backward is a choice of the run, not of the model.
        run.trainer.model.set_memory(args.model.memory.into());
        let optimizer = &mut run.trainer.optimizer;
        let changes = cli::resume::replace_settings(asked, &mut optimizer.config);
        if optimizer.config.ema_decay.is_none() {
            optimizer.averages.clear();
        }
        if writer {
            eprintln!("resumed {} at step {}", path.display(), run.trainer.step);
            for change in changes {
                eprintln!("resume: {change}");
            }
        }
        return Ok(run);
    }
    let model = Glow::new(asked.model.clone(), device)?;
    let trainer = Trainer::new(model, *asked.optimizer, args.seed).with_collective(comm);
    let run = Run::new_in(folder, config, trainer)?;
    if let Some(aside) = run.moved_aside() {
        eprintln!(
            "--overwrite: moved the earlier run in {} to {}",
            args.out.display(),
            aside.display()
        );
    }
    Ok(run)
}

/// Says how the run ended: a line on stderr (with the command that resumes it, after a
/// stop) and the JSON summary on stdout.
fn finish(
    args: &Args,
    argv: &[OsString],
    run: &Run,
    summary: &glow::run::RunSummary,
    device: &engine::Device,
    ranks: usize,
) {
    let out = args.out.display();
    let test = match (summary.test_bpd, summary.test_bpd_ema) {
        (Some(raw), Some(ema)) => format!("{raw:.3} (EMA {ema:.3})"),
        (Some(raw), None) => format!("{raw:.3}"),
        _ => "n/a".into(),
    };
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
            eprintln!("resume with:\n  {launcher}{}", cli::resume::command(argv, &Args::command()));
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
    if let Some(ema) = summary.test_bpd_ema {
        line["test_bpd_ema"] = json!(ema);
    }
    if let Some(signal) = summary.interrupted {
        line["interrupted"] = json!(signal_name(signal));
    }
    cli::print_summary(line);
}

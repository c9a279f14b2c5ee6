//! Bits/dim of a trained model on the test split (or, with `--split train`, the training
//! split, to measure the gap between them), averaged over every image.
//!
//! Dequantisation is reproducible: per-image noise from a fixed seed (`--seed`, default 0)
//! or the bin midpoints with `--dequant midpoint`. `--iw-samples K` reports the tighter
//! importance-weighted bound over K noise draws per image (`glow::train::evaluate_iw`;
//! K = 1 is the usual number). With `--drift`, also measures how far
//! reversible mode's backward pass would move the rebuilt inputs on each test batch
//! (`glow::Glow::reconstruction_drift`). Ends with one JSON line:
//! `{"bpd": …, "images": …, "iw_samples": …, "seconds": …, "images_per_sec": …}` (the
//! evaluation's own time, the model and data already loaded; with `--drift`, also
//! `"drift_max"` and `"drift_median"`).
//!
//! ```sh
//! cargo run --release --example evaluate -- --checkpoint runs/cifar10/checkpoint.safetensors
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use engine::Error;
use glow::train::{evaluate, evaluate_iw};
use glow_rs::cli::{self, validate, DequantArg, SplitArg};
use indicatif::ProgressBar;
use serde_json::json;

/// Evaluate a Glow checkpoint's bits/dim on the test split.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// The split to evaluate.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Dequantisation.
    #[arg(long, value_enum, default_value_t = DequantArg::Noise)]
    dequant: DequantArg,
    /// Seed of the dequantisation noise.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_u64())]
    seed: u64,
    /// Importance-weighted bound over this many dequantisation draws per image (1-1024;
    /// 1: the usual bound). Tighter (lower) as it grows, K forward passes per image.
    #[arg(long, default_value_t = 1)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, 1024))]
    iw_samples: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    batch: usize,
    /// Write each image's bits/dim here, one "index,label,bpd" line per image.
    #[arg(long)]
    #[arg(value_parser = validate::output_file())]
    per_image: Option<PathBuf>,
    /// Also measure the reconstruction drift of reversible mode's backward pass on every
    /// test batch: the largest relative error of an input rebuilt by the inverses from
    /// the latents (one more forward and inverse per batch).
    #[arg(long)]
    drift: bool,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    if args.iw_samples > 1 && args.dequant == DequantArg::Midpoint {
        return Err(cli::usage_error(
            "--iw-samples averages over noise draws; it cannot take --dequant midpoint",
        ));
    }
    let (model, data, ()) = args.source.open(|data| {
        let flag = args.source.data.as_deref();
        match args.split {
            SplitArg::Test => {
                validate::has_test_images(flag, data.train().len(), data.test().len())
            }
            SplitArg::Train => Ok(()),
        }
    })?;
    eprintln!("{}", data.describe());
    let test = args.split.of(data.as_ref());
    let bar = ProgressBar::new(test.len() as u64);
    let batches = test.sequential_batches(args.batch);
    // Throughput of the evaluation itself (the model and data already loaded).
    let started = std::time::Instant::now();
    let result = if args.iw_samples > 1 {
        evaluate_iw(&model, batches, args.seed, args.iw_samples, |done| {
            bar.set_position(done as u64)
        })?
    } else {
        evaluate(
            &model,
            batches,
            args.seed,
            args.dequant == DequantArg::Midpoint,
            |done| bar.set_position(done as u64),
        )?
    };
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if let Some(path) = &args.per_image {
        let io = |e: std::io::Error| Error::invalid("evaluate", format!("{}: {e}", path.display()));
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        writeln!(f, "index,label,bpd").map_err(io)?;
        for (i, bpd) in result.per_image.iter().enumerate() {
            writeln!(f, "{i},{},{bpd}", test.labels[i]).map_err(io)?;
        }
        f.flush().map_err(io)?;
    }
    eprintln!(
        "{:.4} bits/dim over {} images",
        result.mean_bpd,
        result.per_image.len()
    );
    let mut summary = json!({
        "bpd": result.mean_bpd, "images": result.per_image.len(), "iw_samples": args.iw_samples,
        "seconds": seconds, "images_per_sec": result.per_image.len() as f64 / seconds,
    });
    if args.drift {
        let mut drifts = Vec::new();
        for (first_index, pixels, labels) in test.sequential_batches(args.batch) {
            let dequant = args.dequant.of(args.seed, first_index);
            let x = model.preprocess(&pixels, labels.len(), dequant)?;
            drifts.push(model.reconstruction_drift(&x)?);
        }
        drifts.sort_by(f32::total_cmp);
        let (max, median) = (drifts[drifts.len() - 1], drifts[drifts.len() / 2]);
        eprintln!(
            "reconstruction drift of reversible backward over {} batches: max {max:e}, median {median:e}",
            drifts.len()
        );
        summary["drift_max"] = json!(max);
        summary["drift_median"] = json!(median);
    }
    cli::print_summary(summary);
    Ok(())
}

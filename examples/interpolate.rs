//! Latent interpolation between two dataset images, written as a strip PNG: the first and
//! last frames are the two images' reconstructions. Ends with one JSON line.
//!
//! ```sh
//! cargo run --release --example interpolate -- --checkpoint runs/cifar10/checkpoint.safetensors --a 0 --b 1
//! ```

use std::path::PathBuf;

use clap::Parser;
use glow::explore::interpolate;
use glow::picture::save_tensor_grid;
use glow::Dequantization;
use glow_rs::cli::{self, validate};
use serde_json::json;

/// Interpolate in latent space between two test images.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// Index of the first image in the test split.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_usize())]
    a: usize,
    /// Index of the second image in the test split.
    #[arg(long, default_value_t = 1)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_usize())]
    b: usize,
    /// Frames, ends included (2-1024).
    #[arg(long, default_value_t = 10)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(2, validate::MAX_FRAMES))]
    steps: usize,
    /// Output PNG.
    #[arg(long, default_value = "runs/interpolation.png")]
    #[arg(value_parser = validate::output_file())]
    out: PathBuf,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    let (model, data, ()) = args.source.open(|data| {
        let n = data.test().len();
        validate::index("--a", args.a, "the test split", n)?;
        validate::index("--b", args.b, "the test split", n)
    })?;
    let (pa, la) = data.test().batch(&[args.a]);
    let (pb, lb) = data.test().batch(&[args.b]);
    let xa = model.preprocess(&pa, 1, Dequantization::Midpoint)?;
    let xb = model.preprocess(&pb, 1, Dequantization::Midpoint)?;
    let labels = model
        .config()
        .y_condition
        .then_some((la.as_slice(), lb.as_slice()));
    let strip = interpolate(&model, &xa, &xb, labels, args.steps)?;
    cli::create_parent(&args.out)?;
    save_tensor_grid(&args.out, &strip, args.steps)?;
    eprintln!("wrote {}", args.out.display());
    cli::print_summary(
        json!({"file": args.out.display().to_string(), "a": args.a, "b": args.b, "steps": args.steps}),
    );
    Ok(())
}

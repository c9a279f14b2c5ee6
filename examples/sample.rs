//! Sample grids from a trained model at the paper's temperatures
//! (0, .25, .5, .6, .7, .8, .9, 1.0): one PNG per temperature and an overview with one
//! row per temperature. Ends with one JSON line listing the files.
//!
//! ```sh
//! cargo run --release --example sample -- --checkpoint runs/cifar10/checkpoint.safetensors
//! ```

use std::path::PathBuf;

use clap::Parser;
use glow::picture::{save_sample_grids, TEMPERATURES};
use glow_rs::cli::{self, validate, DeviceChoice, MemoryArg};
use serde_json::json;

/// Draw sample grids from a Glow checkpoint.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The checkpoint to sample from.
    #[arg(long)]
    #[arg(value_parser = validate::existing_file())]
    checkpoint: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Stored or reversible backward (default: the checkpoint's; sampling runs no
    /// backward pass, so this only sets the model's mode).
    #[arg(long, value_enum)]
    memory: Option<MemoryArg>,
    /// Images per grid (1-4096).
    #[arg(long, default_value_t = 64)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, validate::MAX_GRID_IMAGES))]
    n: usize,
    /// Seed of the latent draws.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_u64())]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/samples")]
    #[arg(value_parser = validate::output_dir())]
    out: PathBuf,
    #[command(flatten)]
    anomaly: cli::AnomalyArgs,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    args.anomaly.apply();
    let (mut model, _) = cli::open_checkpoint(&args.checkpoint, args.device)?;
    if let Some(m) = args.memory {
        model.set_memory(m.into());
    }
    let files = save_sample_grids(&model, &args.out, "sample", args.n, args.seed)?;
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    cli::print_summary(json!({"files": names, "n": args.n, "temperatures": TEMPERATURES}));
    Ok(())
}

//! Sample grids from a trained model: by default at the paper's temperatures
//! (0, .25, .5, .6, .7, .8, .9, 1.0), one PNG per temperature and an overview with one
//! row per temperature, each labelled with its temperature; `--temperature T` (repeatable)
//! draws at those instead, `--class C` draws one class from a class-conditional model,
//! and `--upscale K` enlarges every picture K times with sharp pixels. Ends with one JSON
//! line listing the files.
//!
//! ```sh
//! cargo run --release --example sample -- --checkpoint runs/cifar10/checkpoint.safetensors
//! cargo run --release --example sample -- --checkpoint runs/cifar10/best.safetensors \
//!     --temperature 0.7 --n 64 --seed 3 --upscale 4
//! ```

use std::path::PathBuf;

use clap::Parser;
use glow::picture::{save_samples, SampleOptions, TEMPERATURES};
use glow_rs::cli::{self, validate, DeviceChoice, MemoryArg, WeightsArg};
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
    /// Draw at this temperature (>= 0; repeat the flag for several). Default: the
    /// paper's eight, 0 to 1.
    #[arg(long = "temperature", value_name = "T")]
    #[arg(allow_hyphen_values = true, value_parser = validate::finite_non_negative_f32())]
    temperatures: Vec<f32>,
    /// Draw every image of this class (a class-conditional model only; 0-based index).
    /// Default: image i is of class i mod the number of classes.
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_usize())]
    class: Option<usize>,
    /// Enlarge every picture this many times, each pixel a sharp block (1-16).
    #[arg(long, default_value_t = 1)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, 16))]
    upscale: usize,
    /// Which weights: the moving average's when the checkpoint kept one, else the
    /// trained ones.
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto)]
    weights: WeightsArg,
    /// Output directory.
    #[arg(long, default_value = "runs/samples")]
    #[arg(value_parser = validate::output_dir())]
    out: PathBuf,
    #[command(flatten)]
    anomaly: cli::AnomalyArgs,
    #[command(flatten)]
    precision: cli::PrecisionArgs,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    args.anomaly.apply();
    let header = glow::checkpoint::read_header(&args.checkpoint)?;
    let temperatures = if args.temperatures.is_empty() {
        TEMPERATURES.to_vec()
    } else {
        args.temperatures.clone()
    };
    let options = SampleOptions {
        n: args.n,
        seed: args.seed,
        temperatures: temperatures.clone(),
        class: args.class,
        upscale: args.upscale,
    };
    // The flags against the model, before it is loaded.
    options.check(&header.config).map_err(cli::usage_error)?;
    let (mut model, device, _) =
        cli::open_checkpoint_weights(&args.checkpoint, args.device, args.weights)?;
    args.precision.apply(&device);
    if let Some(m) = args.memory {
        model.set_memory(m.into());
    }
    let files = save_samples(&model, &args.out, "sample", &options)?;
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    cli::print_summary(json!({
        "files": names, "n": args.n, "temperatures": temperatures, "class": args.class,
    }));
    Ok(())
}

//! Decode a latent file (written by `encode`, format in `glow::latents`) back into
//! images through a model: a grid PNG, and with `--out-bin` the images as CIFAR-10 binary
//! records (label byte, then the pixels), which `--data` of every example reads. Ends
//! with one JSON line.
//!
//! ```sh
//! cargo run --release --example decode -- --checkpoint runs/cifar10/best.safetensors \
//!     --latents runs/latents.safetensors --out runs/decoded.png
//! ```

use std::path::PathBuf;

use clap::Parser;
use glow::latents::load_latents;
use glow::picture::save_tensor_grid;
use glow_rs::cli::{self, validate, DeviceChoice, WeightsArg};
use serde_json::json;

/// Decode latents (from encode) back into images.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The checkpoint whose model decodes (the one that encoded, normally).
    #[arg(long)]
    #[arg(value_parser = validate::existing_file())]
    checkpoint: PathBuf,
    /// The latent file.
    #[arg(long)]
    #[arg(value_parser = validate::existing_file())]
    latents: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Which weights (default: those that encoded the file, as it records).
    #[arg(long, value_enum)]
    weights: Option<WeightsArg>,
    /// Precision of the coupling networks' products (default: the encoder's, as the
    /// file records; the same is needed to invert as encoded).
    #[arg(long, value_enum)]
    matmul_precision: Option<cli::PrecisionArg>,
    /// Images decoded at a time.
    #[arg(long, default_value_t = 64)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    batch: usize,
    /// Images per row of the grid (1-4096).
    #[arg(long, default_value_t = 8)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, validate::MAX_GRID_IMAGES))]
    columns: usize,
    /// The grid PNG to write.
    #[arg(long, default_value = "runs/decoded.png")]
    #[arg(value_parser = validate::output_file())]
    out: PathBuf,
    /// Also write the images as CIFAR-10 binary records to this file.
    #[arg(long)]
    #[arg(value_parser = validate::output_file())]
    out_bin: Option<PathBuf>,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    let latents = load_latents(&args.latents)?;
    let header = glow::checkpoint::read_header(&args.checkpoint)?;
    if header.config.image_shape != latents.config.image_shape
        || header.config.levels != latents.config.levels
    {
        return Err(cli::usage_error(format!(
            "{} holds latents of a model of {:?} images and {} levels; the model of {} has \
             {:?} and {}",
            args.latents.display(),
            latents.config.image_shape,
            latents.config.levels,
            args.checkpoint.display(),
            header.config.image_shape,
            header.config.levels
        )));
    }
    if args.out_bin.is_some() {
        // CIFAR-10's records hold 3x32x32 images and one label byte of 0-9.
        let shape = glow::data::IMAGE_SHAPE;
        let classes = glow::data::CLASS_NAMES.len();
        if latents.config.image_shape != shape || latents.labels.iter().any(|&l| l >= classes) {
            return Err(cli::usage_error(format!(
                "--out-bin writes CIFAR-10 records ({shape:?} images, labels 0-{}), and {} \
                 holds {:?} images with labels up to {}: leave --out-bin out",
                classes - 1,
                args.latents.display(),
                latents.config.image_shape,
                latents.labels.iter().max().copied().unwrap_or(0)
            )));
        }
    }
    let weights = args.weights.unwrap_or(match latents.weights.as_str() {
        "ema" => WeightsArg::Ema,
        "raw" => WeightsArg::Raw,
        _ => WeightsArg::Auto,
    });
    let (model, device, _) = cli::open_checkpoint_weights(&args.checkpoint, args.device, weights)?;
    let precision = args
        .matmul_precision
        .unwrap_or(match latents.matmul_precision.as_str() {
            "bf16" => cli::PrecisionArg::Bf16,
            _ => cli::PrecisionArg::F32,
        });
    cli::PrecisionArgs {
        matmul_precision: precision,
    }
    .apply(&device);
    let n = latents.len();
    let mut parts = Vec::new();
    for first in (0..n).step_by(args.batch) {
        let count = args.batch.min(n - first);
        let z = latents.batch(&model, first, count)?;
        parts.push(engine::no_grad(|| model.decode(&z))?.to_device(&engine::Device::Cpu)?);
    }
    let x = engine::Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?;
    cli::create_parent(&args.out)?;
    save_tensor_grid(&args.out, &x, args.columns)?;
    eprintln!("wrote {n} images to {}", args.out.display());
    let mut summary = json!({"file": args.out.display().to_string(), "images": n});
    if let Some(bin) = &args.out_bin {
        let pixels = model.postprocess(&x)?;
        let per = pixels.len() / n.max(1);
        let mut records = Vec::with_capacity(n * (per + 1));
        for (image, &label) in pixels.chunks_exact(per.max(1)).zip(&latents.labels) {
            // Checked above: every label is below 10.
            records.push(label as u8);
            records.extend_from_slice(image);
        }
        cli::create_parent(bin)?;
        glow::atomic::write_atomic(bin, |tmp| {
            std::fs::write(tmp, &records)
                .map_err(|e| engine::Error::io(bin, format!("cannot write the records: {e}")))
        })?;
        eprintln!("wrote them as CIFAR-10 records to {}", bin.display());
        summary["bin"] = json!(bin.display().to_string());
    }
    cli::print_summary(summary);
    Ok(())
}

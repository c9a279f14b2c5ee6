//! Encode images to their latents: every image of a split (or a range of it) through a
//! trained model, written as one safetensors file (`glow::latents` documents it), which
//! `decode` turns back into images. Ends with one JSON line.
//!
//! The pixels are dequantised at their bins' midpoints by default, so decoding gives back
//! exactly the same bytes; `--dequant noise` uses per-image noise of `--seed` instead.
//!
//! ```sh
//! cargo run --release --example encode -- --checkpoint runs/cifar10/best.safetensors \
//!     --count 64 --out runs/latents.safetensors
//! cargo run --release --example decode -- --checkpoint runs/cifar10/best.safetensors \
//!     --latents runs/latents.safetensors --out runs/decoded.png
//! ```

use std::path::PathBuf;

use clap::Parser;
use glow::latents::{save_latents, Latents};
use glow_rs::cli::{self, validate, DequantArg, SplitArg};
use serde_json::json;

/// Encode a split's images to their latents (safetensors).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// The split to encode.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// The first image (index in the split).
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_usize())]
    first: usize,
    /// How many images (default: the rest of the split).
    #[arg(long)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    count: Option<usize>,
    /// Dequantisation.
    #[arg(long, value_enum, default_value_t = DequantArg::Midpoint)]
    dequant: DequantArg,
    /// Seed of --dequant noise.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_u64())]
    seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    batch: usize,
    /// The latent file to write.
    #[arg(long, default_value = "runs/latents.safetensors")]
    #[arg(value_parser = validate::output_file())]
    out: PathBuf,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> cli::CliResult<()> {
    let name = args.split.name();
    let (model, data, count, averaged) = args.source.open_saying_weights(|data| {
        let n = args.split.of(data).len();
        validate::index("--first", args.first, &format!("the {name} split"), n)?;
        let count = args.count.unwrap_or(n - args.first);
        if count > n - args.first {
            return Err(cli::usage_error(format!(
                "--count {count} from --first {} runs past the {name} split's {n} images",
                args.first
            )));
        }
        Ok(count)
    })?;
    let split = args.split.of(data.as_ref());
    let mut latents = Latents {
        config: model.config().clone(),
        latents: Vec::new(),
        labels: Vec::new(),
        indices: Vec::new(),
        weights: if averaged { "ema" } else { "raw" }.into(),
        matmul_precision: {
            use engine::precision::{effective, matmul_precision, MatmulPrecision};
            let bf16 = matches!(model.device(), engine::Device::Cpu)
                && effective(matmul_precision()) == MatmulPrecision::Bf16;
            if bf16 { "bf16" } else { "f32" }.into()
        },
        dequantization: match args.dequant {
            DequantArg::Midpoint => "midpoint".into(),
            DequantArg::Noise => format!("noise:{}", args.seed),
        },
        source: format!(
            "{}, {name} split, images {}..{}",
            args.source.checkpoint.display(),
            args.first,
            args.first + count
        ),
    };
    let end = args.first + count;
    engine::no_grad(|| -> engine::Result<()> {
        for start in (args.first..end).step_by(args.batch) {
            let indices: Vec<usize> = (start..start.saturating_add(args.batch).min(end)).collect();
            let (pixels, labels) = split.batch(&indices);
            let dequant = args.dequant.of(args.seed, start as u64);
            let x = model.preprocess(&pixels, labels.len(), dequant)?;
            let y = model.config().y_condition.then_some(labels.as_slice());
            let z = model.encode(&x, y)?;
            let at: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
            latents.push(&z, &labels, &at)?;
        }
        Ok(())
    })?;
    cli::create_parent(&args.out)?;
    save_latents(&args.out, &latents)?;
    eprintln!(
        "wrote the latents of {count} images to {}",
        args.out.display()
    );
    let shapes: Vec<&Vec<usize>> = latents.latents.iter().map(|l| &l.0).collect();
    cli::print_summary(json!({
        "file": args.out.display().to_string(), "images": count, "shapes": shapes,
    }));
    Ok(())
}

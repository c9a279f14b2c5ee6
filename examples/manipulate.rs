//! Attribute manipulation with CIFAR-10 classes: the direction of a class in latent space
//! is the mean latent of its training images minus the mean latent of all others; an
//! image is decoded at `z + α · direction` for several `α`, written as a strip PNG.
//! Ends with one JSON line.
//!
//! ```sh
//! cargo run --release --example manipulate -- --checkpoint runs/cifar10/checkpoint.safetensors --class 7 --index 3
//! ```

use std::path::PathBuf;

use clap::Parser;
use engine::{Error, Result, Tensor};
use glow::data::CLASS_NAMES;
use glow::explore::{attribute_direction, manipulate};
use glow::Dequantization;
use glow_rs::cli;
use serde_json::json;

/// Move a test image along a class direction in latent space.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// The class (0-9: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
    #[arg(long, default_value_t = 7)]
    class: usize,
    /// Index of the image in the test split.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Training images per group used for the mean latents.
    #[arg(long, default_value_t = 200)]
    per_group: usize,
    /// Steps along the direction.
    #[arg(long, value_delimiter = ',', default_value = "-1,-0.5,0,0.5,1")]
    alphas: Vec<f32>,
    /// Output PNG.
    #[arg(long, default_value = "runs/manipulation.png")]
    out: PathBuf,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

/// Preprocessed images of `indices` in batches of 50, concatenated.
fn encode_group(
    model: &glow::Glow,
    data: &glow::data::Dataset,
    indices: &[usize],
) -> Result<(Tensor, Vec<usize>)> {
    let mut parts = Vec::new();
    let mut labels = Vec::new();
    for chunk in indices.chunks(50) {
        let (px, l) = data.batch(chunk);
        parts.push(model.preprocess(&px, chunk.len(), Dequantization::Midpoint)?);
        labels.extend(l);
    }
    Ok((
        Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?,
        labels,
    ))
}

fn run(args: Args) -> Result<()> {
    if args.class >= CLASS_NAMES.len() {
        return Err(Error::invalid(
            "manipulate",
            format!("--class {} is not in 0..10", args.class),
        ));
    }
    let (model, data) = args.source.open()?;
    if args.index >= data.test.len() {
        return Err(Error::invalid(
            "manipulate",
            format!(
                "--index {}: the test split has {} images",
                args.index,
                data.test.len()
            ),
        ));
    }
    let train = &data.train;
    let with: Vec<usize> = (0..train.len())
        .filter(|&i| train.labels[i] as usize == args.class)
        .take(args.per_group)
        .collect();
    let without: Vec<usize> = (0..train.len())
        .filter(|&i| train.labels[i] as usize != args.class)
        .take(args.per_group)
        .collect();
    if with.is_empty() || without.is_empty() {
        return Err(Error::invalid(
            "manipulate",
            format!(
                "the training split has no images {} class {}",
                if with.is_empty() { "of" } else { "outside" },
                args.class
            ),
        ));
    }
    eprintln!(
        "direction of '{}' from {} + {} training images",
        CLASS_NAMES[args.class],
        with.len(),
        without.len()
    );
    let (xw, lw) = encode_group(&model, train, &with)?;
    let (xo, lo) = encode_group(&model, train, &without)?;
    let cond = model.config().y_condition;
    let direction = attribute_direction(
        &model,
        &xw,
        &xo,
        cond.then_some((lw.as_slice(), lo.as_slice())),
    )?;
    let (px, label) = data.test.batch(&[args.index]);
    let x = model.preprocess(&px, 1, Dequantization::Midpoint)?;
    let strip = manipulate(
        &model,
        &x,
        cond.then_some(label.as_slice()),
        &direction,
        &args.alphas,
    )?;
    cli::create_parent(&args.out)?;
    cli::write_grid(&args.out, &strip, args.alphas.len())?;
    eprintln!("wrote {}", args.out.display());
    cli::print_summary(
        json!({"file": args.out.display().to_string(), "class": CLASS_NAMES[args.class], "index": args.index, "alphas": args.alphas}),
    );
    Ok(())
}

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
use engine::{Result, Tensor};
use glow::data::Dataset;
use glow::explore::{attribute_direction, manipulate};
use glow::picture::save_tensor_grid;
use glow::Dequantization;
use glow_rs::cli::{self, validate};
use serde_json::json;

/// Move a test image along a class direction in latent space.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// The class (below the dataset's number of classes; CIFAR-10's 0-9 are airplane,
    /// automobile, bird, cat, deer, dog, frog, horse, ship, truck).
    #[arg(long, default_value_t = 7)]
    #[arg(allow_hyphen_values = true, value_parser = validate::class())]
    class: usize,
    /// Index of the image in the test split.
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_usize())]
    index: usize,
    /// Training images per group used for the mean latents (at least 1).
    #[arg(long, default_value_t = 200)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    per_group: usize,
    /// Steps along the direction (finite numbers).
    #[arg(long, value_delimiter = ',', default_value = "-1,-0.5,0,0.5,1")]
    #[arg(allow_hyphen_values = true, value_parser = validate::finite_f32())]
    alphas: Vec<f32>,
    /// Output PNG.
    #[arg(long, default_value = "runs/manipulation.png")]
    #[arg(value_parser = validate::output_file())]
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

/// The first `per_group` training images of `class` and the first `per_group` of the
/// other classes; a usage error when either group is empty.
fn groups(
    data: &Dataset,
    class: usize,
    per_group: usize,
) -> cli::CliResult<(Vec<usize>, Vec<usize>)> {
    let pick = |of_class: bool| -> Vec<usize> {
        (0..data.len())
            .filter(|&i| (usize::from(data.labels[i]) == class) == of_class)
            .take(per_group)
            .collect()
    };
    let (with, without) = (pick(true), pick(false));
    if with.is_empty() || without.is_empty() {
        return Err(cli::usage_error(format!(
            "--class must be a class with training images and others beside it, got \
             {class}: the training split has no images {} it",
            if with.is_empty() { "of" } else { "outside" },
        )));
    }
    Ok((with, without))
}

fn run(args: Args) -> cli::CliResult<()> {
    let (model, data, ((with, without), class)) = args.source.open(|data| {
        validate::index("--index", args.index, "the test split", data.test().len())?;
        validate::class_of(args.class, data.num_classes())?;
        Ok((
            groups(data.train(), args.class, args.per_group)?,
            data.class_name(args.class),
        ))
    })?;
    let train = data.train();
    eprintln!(
        "direction of '{class}' from {} + {} training images",
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
    let (px, label) = data.test().batch(&[args.index]);
    let x = model.preprocess(&px, 1, Dequantization::Midpoint)?;
    let strip = manipulate(
        &model,
        &x,
        cond.then_some(label.as_slice()),
        &direction,
        &args.alphas,
    )?;
    cli::create_parent(&args.out)?;
    save_tensor_grid(&args.out, &strip, args.alphas.len())?;
    eprintln!("wrote {}", args.out.display());
    cli::print_summary(
        json!({"file": args.out.display().to_string(), "class": class, "index": args.index, "alphas": args.alphas}),
    );
    Ok(())
}

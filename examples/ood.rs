//! Out-of-distribution test: a checkpoint's per-image bits/dim on the test split of the
//! data it was trained on and on another dataset's, drawn as two histograms (a PNG with
//! labelled axes and a legend), with the means and the AUROC of bits/dim used as a
//! detector of the other dataset (`glow::ood`). For a model trained on CIFAR-10 against
//! SVHN, Nalisnick et al. (2019) found SVHN's images given *fewer* bits/dim: an AUROC well
//! below 0.5.
//!
//! ```sh
//! cargo run --release --example ood -- --checkpoint runs/cifar10/checkpoint.safetensors \
//!     --data data/cifar10 --ood-dataset svhn --ood-data data/svhn
//! ```
//!
//! Ends with one JSON line: `{"in": {"dataset", "images", "mean_bpd"}, "out": {…},
//! "auroc": …, "file": …}`.

use std::path::PathBuf;

use clap::Parser;
use glow::data::Dataset;
use glow::picture::{save_histogram, PlotOptions};
use glow::train::evaluate;
use glow::Glow;
use glow_rs::cli::{self, validate, DatasetArg, DatasetArgs};
use indicatif::ProgressBar;
use serde_json::json;

/// Score a checkpoint on its own test split and on another dataset's, and draw both.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The model, and (--dataset, --data) the data it was trained on.
    #[command(flatten)]
    source: cli::CheckpointArgs,
    /// The other dataset, of the model's image shape.
    #[arg(long, value_enum)]
    ood_dataset: DatasetArg,
    /// Its files (a folder of pictures is read at the model's size and channels).
    #[arg(long)]
    #[arg(value_parser = validate::existing_path())]
    ood_data: PathBuf,
    /// At most this many images of each test split (its first ones).
    #[arg(long, default_value_t = 10_000)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    max_images: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    #[arg(allow_hyphen_values = true, value_parser = validate::positive_usize())]
    batch: usize,
    /// Seed of the dequantisation noise (the same for both datasets).
    #[arg(long, default_value_t = 0)]
    #[arg(allow_hyphen_values = true, value_parser = validate::any_u64())]
    seed: u64,
    /// Bars of each histogram.
    #[arg(long, default_value_t = 60)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, 1000))]
    bins: usize,
    /// The histogram PNG.
    #[arg(long, default_value = "ood.png")]
    #[arg(value_parser = validate::output_file())]
    out: PathBuf,
}

fn main() {
    cli::exit_on_error(run(Args::parse()));
}

/// Per-image bits/dim of the first `max` images of `split`.
fn score(model: &Glow, split: &Dataset, args: &Args) -> cli::CliResult<Vec<f64>> {
    let n = split.len().min(args.max_images);
    let head = Dataset::new(
        split.shape,
        split.images[..n * split.image_bytes()].to_vec(),
        split.labels[..n].to_vec(),
    )?;
    let bar = ProgressBar::new(n as u64);
    let result = evaluate(
        model,
        head.sequential_batches(args.batch),
        args.seed,
        false,
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    Ok(result.per_image.iter().map(|&v| f64::from(v)).collect())
}

fn run(args: Args) -> cli::CliResult<()> {
    let (model, data, ()) = args.source.open(|data| {
        let flag = args.source.data.as_deref();
        validate::has_test_images(flag, data.train().len(), data.test().len())
    })?;
    let cfg = model.config();
    if cfg.y_condition {
        return Err(cli::usage_error(format!(
            "ood compares p(x), and the model of {} is class-conditional (p(x | y)): \
             train one without --y-condition",
            args.source.checkpoint.display()
        )));
    }
    let [c, h, _] = cfg.image_shape;
    let other = DatasetArgs {
        kind: args.ood_dataset,
        image_size: (args.ood_dataset == DatasetArg::Folder).then_some(h),
        channels: (args.ood_dataset == DatasetArg::Folder).then_some(c),
        class_folders: false,
    }
    .load(Some(&args.ood_data))?;
    if other.image_shape() != cfg.image_shape {
        return Err(cli::usage_error(format!(
            "--ood-dataset {} holds {:?} images and the model takes {:?} ones",
            args.ood_dataset.flag(),
            other.image_shape(),
            cfg.image_shape
        )));
    }
    if other.test().is_empty() {
        return Err(cli::usage_error(format!(
            "--ood-data {} has no test images to score",
            args.ood_data.display()
        )));
    }
    eprintln!("in: {}", data.describe());
    eprintln!("out: {}", other.describe());
    let inside = score(&model, data.test(), &args)?;
    let outside = score(&model, other.test(), &args)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let auroc = glow::ood::auroc(&outside, &inside);
    let in_name = format!("{} test (trained on)", args.source.dataset.kind.flag());
    let out_name = format!("{} test", args.ood_dataset.flag());
    cli::create_parent(&args.out)?;
    save_histogram(
        &args.out,
        &[(&in_name, &inside), (&out_name, &outside)],
        args.bins,
        &PlotOptions {
            title: "Per-image bits/dim".into(),
            x_label: "bits/dim".into(),
            y_label: "fraction of images".into(),
            ..PlotOptions::default()
        },
    )?;
    eprintln!(
        "{in_name}: {:.4} bits/dim over {} images; {out_name}: {:.4} over {}; AUROC of \
         bits/dim as a detector of {}: {}; wrote {}",
        mean(&inside),
        inside.len(),
        mean(&outside),
        outside.len(),
        args.ood_dataset.flag(),
        auroc.map_or("undefined".into(), |a| format!("{a:.4}")),
        args.out.display()
    );
    cli::print_summary(json!({
        "in": {"dataset": args.source.dataset.kind.flag(), "images": inside.len(), "mean_bpd": mean(&inside)},
        "out": {"dataset": args.ood_dataset.flag(), "images": outside.len(), "mean_bpd": mean(&outside)},
        "auroc": auroc,
        "file": args.out.display().to_string(),
    }));
    Ok(())
}

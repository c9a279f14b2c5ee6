//! The rules the examples' flags are checked by, in one place, so that a bad value gets
//! one line in the same words in every example, before any work:
//!
//! ```text
//! error: --lr must be a finite number > 0, got NaN
//! ```
//!
//! and exit status 2 ([`super::EXIT_USAGE`]). There are two kinds of check:
//!
//! - **A value on its own** (a range, a finite number, a path that exists): a clap value
//!   parser built here, named in the flag's attribute,
//!   `#[arg(long, value_parser = validate::finite_positive_f32())]`. Clap runs it while it
//!   parses the command line, so a bad value stops the program before `main` does
//!   anything; the error is clap's `ValueValidation` kind carrying the one line, which
//!   clap prints and exits with 2, as it does for its own usage errors.
//! - **A value against the data it names or another flag** (`--batch` against the
//!   training split, `--a` against the test split, `--resume` without a checkpoint):
//!   functions here that return a [`super::CliError::Usage`], which [`super::exit_on_error`] prints
//!   as one line with exit status 2. The examples call them before they pick a device or
//!   build a model.
//!
//! `tests/flags.rs` runs every example with bad values of every numeric flag.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{usage_error, CliResult as Result};
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// The most `--levels` any image allows: each level halves the height and width, and an
/// image of 2^16 = 65,536 pixels a side is far past any dataset's. A sanity bound; the
/// levels are checked against the data's actual size by [`levels_fit`].
pub const MAX_LEVELS: usize = 16;

/// The largest `--hidden`: 16 times the paper's 512, where the weights alone (`hidden²`
/// per flow step) already run to tens of GB. A sanity bound: a mistyped `--hidden 1000000`
/// is refused here rather than aborting on an allocation.
pub const MAX_HIDDEN: usize = 8192;

/// The largest `--depth`: 32 times the paper's 32 steps per level.
pub const MAX_DEPTH: usize = 1024;

/// The largest `--steps`: the optimiser counts its steps in 32 bits.
pub const MAX_STEPS: u64 = u32::MAX as u64;

/// The largest `--epochs`: keeps `epochs × steps per epoch` far from overflowing.
pub const MAX_EPOCHS: u64 = 1_000_000;

/// The most images of one sample grid (`sample --n`): a 64x64 grid.
pub const MAX_GRID_IMAGES: usize = 4096;

/// The most frames of an interpolation strip (`interpolate --steps`).
pub const MAX_FRAMES: usize = 1024;

/// What a rejected value is told: the rule (`"must be an integer >= 1"`) and, after the
/// value, why it broke it when that is not plain (`"no such file or directory"`).
struct Complaint {
    must: String,
    why: Option<String>,
}

impl Complaint {
    fn must(must: impl Into<String>) -> Complaint {
        Complaint {
            must: must.into(),
            why: None,
        }
    }
}

/// The check a [`Rule`] runs on a flag's text (not necessarily UTF-8: a path).
type Check<T> = dyn Fn(&OsStr) -> std::result::Result<T, Complaint> + Send + Sync;

/// A flag's rule as a clap value parser (`#[arg(long, value_parser = …)]`): it turns the
/// flag's text into a value or rejects it with one line naming the flag and the value,
/// `--FLAG must be …, got VALUE`. Built by the functions of this module.
#[derive(Clone)]
pub struct Rule<T> {
    check: Arc<Check<T>>,
}

impl<T> Rule<T> {
    fn new(
        check: impl Fn(&OsStr) -> std::result::Result<T, Complaint> + Send + Sync + 'static,
    ) -> Self {
        Rule {
            check: Arc::new(check),
        }
    }
}

/// How a flag is named in an error: `--lr`, or `<DEVICE>` for a positional argument.
fn flag_name(arg: Option<&clap::Arg>) -> String {
    match arg {
        Some(a) => match a.get_long() {
            Some(long) => format!("--{long}"),
            None => a.to_string(),
        },
        None => "the argument".into(),
    }
}

/// A value as an error shows it (an empty one would read as nothing at all).
fn shown(text: &str) -> String {
    if text.is_empty() {
        "an empty value".into()
    } else {
        text.into()
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Rule<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> std::result::Result<T, clap::Error> {
        (self.check)(value).map_err(|c| {
            let text = value.to_string_lossy();
            let why = c.why.map(|w| format!(" ({w})")).unwrap_or_default();
            // A raw error is printed as `error: ` and this line, with no usage block: the
            // one line the module promises. Its kind makes clap exit with status 2.
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("{} {}, got {}{why}\n", flag_name(arg), c.must, shown(&text)),
            )
        })
    }
}

/// An integer in `min..=max`, as `T`; `why` explains the range to the user.
fn integer<T>(min: u64, max: u64, why: &str) -> Rule<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    let range = if max == u64::MAX {
        format!(">= {min}")
    } else {
        format!("in {min}..={max}")
    };
    let must = format!("must be an integer {range}{why}");
    Rule::new(move |text| {
        text.to_str()
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|v| (min..=max).contains(v))
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| Complaint::must(must.clone()))
    })
}

/// A count of at least 1 (`--batch`, `--per-group`).
pub fn positive_usize() -> Rule<usize> {
    integer(1, usize::MAX as u64, "")
}

/// An integer in `min..=max`, `max` being the largest that makes sense for the flag.
pub fn usize_in(min: usize, max: usize) -> Rule<usize> {
    integer(min as u64, max as u64, "")
}

/// Any integer >= 0 (an index, checked against the data later by [`index`]).
pub fn any_usize() -> Rule<usize> {
    integer(0, usize::MAX as u64, "")
}

/// Any integer >= 0 (`--seed`).
pub fn any_u64() -> Rule<u64> {
    integer(0, u64::MAX, "")
}

/// A count of at least 1 that fits 32 bits (`--max-bad-steps`).
pub fn positive_u32() -> Rule<u32> {
    integer(1, u64::from(u32::MAX), "")
}

/// Any integer that fits 32 bits (`--warmup`, where 0 means none).
pub fn any_u32() -> Rule<u32> {
    integer(0, u64::from(u32::MAX), "")
}

/// An integer in `min..=max` (`--steps`, `--epochs`).
pub fn u64_in(min: u64, max: u64) -> Rule<u64> {
    integer(min, max, "")
}

/// The interval of something done every so many steps (`--eval-every`,
/// `--sample-every`, `--checkpoint-every`): any integer >= 0, where 0 means never. (It
/// was refused while the loop divided the step by it and the evaluation also wrote the
/// checkpoint; `glow::run` does neither, and checkpoints have their own schedule.)
pub fn step_interval() -> Rule<u64> {
    integer(0, u64::MAX, "")
}

/// `--levels`: 1 to [`MAX_LEVELS`]; [`levels_fit`] checks them against the data.
pub fn levels() -> Rule<usize> {
    integer(1, MAX_LEVELS as u64, "")
}

/// `levels` squeezes fit images of `shape`: each halves the height and width, so both
/// must be multiples of 2^levels (a 32x32 image allows at most 5).
pub fn levels_fit(levels: usize, shape: [usize; 3]) -> Result<()> {
    let [_, h, w] = shape;
    let most = h.trailing_zeros().min(w.trailing_zeros()) as usize;
    if levels > most {
        return Err(usage_error(format!(
            "--levels must be at most {most} for the data's {h}x{w} images (each level \
             halves the height and width), got {levels}"
        )));
    }
    Ok(())
}

/// `--n-bits`: 1 to 8 bits per colour channel.
pub fn n_bits() -> Rule<u32> {
    integer(1, 8, "")
}

/// `--class`: a class label, 0 to 65,535 (labels are `u16`); checked against the
/// dataset's number of classes by [`class_of`] once the data is read.
pub fn class() -> Rule<usize> {
    integer(0, u64::from(u16::MAX), " (a class label)")
}

/// `--class` `value` must be one of the `classes` of the dataset.
pub fn class_of(value: usize, classes: usize) -> Result<()> {
    if value < classes {
        return Ok(());
    }
    Err(usage_error(format!(
        "--class must be below {classes}, the dataset's number of classes, got {value}"
    )))
}

/// An `f32` accepted by `keep`, described by `must`.
fn float(must: &'static str, keep: fn(f32) -> bool) -> Rule<f32> {
    Rule::new(move |text| {
        text.to_str()
            .and_then(|t| t.parse::<f32>().ok())
            .filter(|&v| keep(v))
            .ok_or_else(|| Complaint::must(must))
    })
}

/// A finite number > 0 (`--lr`). Text that overflows `f32` (`1e40`) or rounds to 0
/// (`1e-50`) is refused too: it reads as infinity or zero.
pub fn finite_positive_f32() -> Rule<f32> {
    float("must be a finite number > 0", |v| v.is_finite() && v > 0.0)
}

/// A finite number >= 0 (`--weight-decay`, `--max-grad-norm`).
pub fn finite_non_negative_f32() -> Rule<f32> {
    float("must be a finite number >= 0", |v| {
        v.is_finite() && v >= 0.0
    })
}

/// A number in `[0, 1)` (`--beta1`).
pub fn unit_interval_f32() -> Rule<f32> {
    float("must be a number in [0, 1)", |v| (0.0..1.0).contains(&v))
}

/// A number in `(0, 1)` (`--beta2`, a decay that must forget and must remember).
pub fn open_unit_interval_f32() -> Rule<f32> {
    float("must be a number in (0, 1), exclusive", |v| {
        v > 0.0 && v < 1.0
    })
}

/// `--ema`: a decay in `[0, 1)` (0: off), or `polyak`, openai/glow's decay of
/// `1 − 1/(steps per epoch · --polyak-epochs)`.
pub fn ema() -> Rule<EmaArg> {
    Rule::new(|text| {
        let t = text.to_str().unwrap_or("");
        if t == "polyak" {
            return Ok(EmaArg::Polyak);
        }
        t.parse::<f32>()
            .ok()
            .filter(|v| (0.0..1.0).contains(v))
            .map(EmaArg::Decay)
            .ok_or_else(|| Complaint::must("must be a decay in [0, 1) (0: off) or \"polyak\""))
    })
}

/// The value of `--ema`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmaArg {
    /// This decay (0: no average).
    Decay(f32),
    /// openai/glow's: `1 − 1/(steps per epoch · --polyak-epochs)`.
    Polyak,
}

/// Any finite number (`--alphas`, each of the list).
pub fn finite_f32() -> Rule<f32> {
    float("must be a finite number", f32::is_finite)
}

/// What is at `path`: `Some(true)` a directory, `Some(false)` something else, `None`
/// nothing.
fn kind(path: &Path) -> Option<bool> {
    std::fs::metadata(path).ok().map(|m| m.is_dir())
}

/// A path with a complaint when `bad` says what is wrong with what is there.
fn path_rule(must: &'static str, bad: fn(Option<bool>) -> Option<&'static str>) -> Rule<PathBuf> {
    Rule::new(move |text| {
        let path = PathBuf::from(text);
        match bad(kind(&path)) {
            None => Ok(path),
            Some(why) => Err(Complaint {
                must: must.into(),
                why: Some(why.into()),
            }),
        }
    })
}

/// An existing file, not a directory (`--checkpoint`).
pub fn existing_file() -> Rule<PathBuf> {
    path_rule("must be an existing file", |k| match k {
        None => Some("no such file or directory"),
        Some(true) => Some("a directory"),
        Some(false) => None,
    })
}

/// An existing file or directory (`--data`).
pub fn existing_path() -> Rule<PathBuf> {
    path_rule("must be an existing directory or file", |k| {
        k.is_none().then_some("no such file or directory")
    })
}

/// A directory to write into, created if missing; refused if a file is in the way
/// (`--out` of `train_cifar10` and `sample`, `--download`).
pub fn output_dir() -> Rule<PathBuf> {
    path_rule("must be a directory (or not exist yet)", |k| {
        (k == Some(false)).then_some("a file")
    })
}

/// A file to write, created or replaced; refused if a directory is in the way (`--out`
/// of `interpolate` and `manipulate`, `--per-image`).
pub fn output_file() -> Rule<PathBuf> {
    path_rule("must be a file path, not a directory", |k| {
        (k == Some(true)).then_some("a directory")
    })
}

/// `value` of `flag` must index one of the `len` images of `split` (`"the test split"`).
pub fn index(flag: &str, value: usize, split: &str, len: usize) -> Result<()> {
    match len {
        _ if value < len => Ok(()),
        0 => Err(usage_error(format!(
            "{flag} must be an index into {split}, which is empty, got {value}"
        ))),
        _ => Err(usage_error(format!(
            "{flag} must be an index below {len}, the images of {split}, got {value}"
        ))),
    }
}

/// The flags of a training run that are checked against each other and the data.
#[derive(Debug, Clone, Copy)]
pub struct TrainingFlags<'a> {
    /// `--batch`.
    pub batch: usize,
    /// `--data`.
    pub data: Option<&'a Path>,
    /// `--dataset` and its options.
    pub dataset: &'a super::DatasetArgs,
    /// `--download`.
    pub download: Option<&'a Path>,
    /// The checkpoint `--resume` continues from, when `--resume` is given.
    pub resume_from: Option<&'a Path>,
}

/// What `train_cifar10` checks before any work beyond what its flags' rules can: the
/// checkpoint `--resume` needs exists, the dataset flags go together
/// ([`super::DatasetArgs::check`]), and, with `--download`, the official files have at
/// least `--batch` training images (their counts are known). Without `--download` the
/// run checks the data it reads with [`data_fits`], before any other work, so that a
/// large dataset is read once.
pub fn training_run(flags: &TrainingFlags) -> Result<()> {
    if let Some(ckpt) = flags.resume_from {
        if !ckpt.is_file() {
            return Err(usage_error(format!(
                "--resume needs the checkpoint of an earlier run, got no file at {} \
                 (train without --resume first, or point --out at that run)",
                ckpt.display()
            )));
        }
    }
    flags.dataset.check()?;
    match (flags.download, flags.dataset.kind.official_counts()) {
        (Some(_), Some((train, test))) => data_fits(flags.batch, None, train, test),
        (Some(_), None) => Err(usage_error(format!(
            "--download fetches cifar10, cifar100, mnist and svhn; for --dataset {} give \
             --data with its files (the README's list of datasets says where each comes from)",
            flags.dataset.kind.flag()
        ))),
        // Checked by the caller once it has read the data ([`data_fits`]), so that the
        // data is read once.
        (None, _) => Ok(()),
    }
}

/// The dataset of `--data` (`data`; `None`: the built-in sample), with `train` and
/// `test` images, must have at least `batch` training images and some test images.
pub fn data_fits(batch: usize, data: Option<&Path>, train: usize, test: usize) -> Result<()> {
    if batch > train {
        return Err(usage_error(format!(
            "--batch must be at most {train}, the images of the training split, got {batch}"
        )));
    }
    has_test_images(data, train, test)
}

/// In a data-parallel run of `ranks` ranks, `--batch` (the global batch) must split
/// into equal shards.
pub fn batch_splits(batch: usize, ranks: usize) -> Result<()> {
    if ranks > 0 && batch.is_multiple_of(ranks) {
        return Ok(());
    }
    Err(usage_error(format!(
        "--batch must be a multiple of the {ranks} ranks (each takes an equal shard of every batch), got {batch}"
    )))
}

/// `--init-batch`: at most the `train` images of the training split and a multiple of
/// the `ranks` (each initialises on its shard); when not given, `default` bounded by the
/// split, rounded down to a multiple of the ranks.
pub fn init_batch(
    given: Option<usize>,
    default: usize,
    train: usize,
    ranks: usize,
) -> Result<usize> {
    let ranks = ranks.max(1);
    match given {
        Some(n) if n > train => Err(usage_error(format!(
            "--init-batch must be at most {train}, the images of the training split, got {n}"
        ))),
        Some(n) if !n.is_multiple_of(ranks) => Err(usage_error(format!(
            "--init-batch must be a multiple of the {ranks} ranks (each initialises on an \
             equal shard), got {n}"
        ))),
        Some(n) => Ok(n),
        None => Ok((default.min(train) / ranks * ranks).max(ranks)),
    }
}

/// The dataset of `--data` (`data`; `None`: the built-in sample), with `train` and `test`
/// images, must have test images to evaluate on: it has none when it holds fewer than 10
/// images and no test batch.
pub fn has_test_images(data: Option<&Path>, train: usize, test: usize) -> Result<()> {
    if test > 0 {
        return Ok(());
    }
    Err(usage_error(format!(
        "--data must hold test images to evaluate on, got {} ({train} training images and \
         no test split: CIFAR-10 holds out a tenth from 10 images on when there is no {}, a \
         folder of pictures every tenth picture, the other datasets have test files)",
        data.map_or("the built-in sample".into(), |p| p.display().to_string()),
        glow::data::TEST_FILE
    )))
}

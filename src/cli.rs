//! What the examples share: the flags that describe a model, device choice, data loading,
//! the machine-readable last line, and how a run ends on an error ([`exit_on_error`]; the
//! rules every flag is checked by are in [`validate`]). Sample grids are `glow::picture`'s.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use engine::backend::AdamKind;
use engine::{Device, Result};
use glow::data::{Cifar10, ImageSplits};
use glow::{Coupling, Glow, GlowConfig, Memory, Permutation};

mod error;
pub mod preset;
pub mod progress;
pub mod resume;
pub mod validate;

pub use error::{
    exit_on_error, report, usage_error, CliError, CliResult, EXIT_FAILURE, EXIT_USAGE,
};

/// `--device` (see `glow::device::Choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// A real GPU if present, else the faster of the CPU device and a CPU Vulkan driver.
    Auto,
    /// The CPU device.
    Cpu,
    /// The reference device: plain ndarray loops in f64, the oracle of the tests (slow).
    Reference,
    /// The Vulkan device (`ENGINE_VULKAN_DEVICE` picks one by index or name).
    Vulkan,
}

impl From<DeviceChoice> for glow::device::Choice {
    fn from(c: DeviceChoice) -> glow::device::Choice {
        match c {
            DeviceChoice::Auto => glow::device::Choice::Auto,
            DeviceChoice::Cpu => glow::device::Choice::Cpu,
            DeviceChoice::Reference => glow::device::Choice::Reference,
            DeviceChoice::Vulkan => glow::device::Choice::Vulkan,
        }
    }
}

/// `--dataset`: which loader reads `--data` (each reads its dataset's official format;
/// `glow::data` and the README's list of datasets say where each comes from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DatasetArg {
    /// CIFAR-10's binary batches (default: the built-in 3,000-image sample).
    #[default]
    Cifar10,
    /// CIFAR-100's binary version (`train.bin`, `test.bin`), the 100 fine labels.
    Cifar100,
    /// CIFAR-100 with its 20 coarse labels (superclasses).
    Cifar100Coarse,
    /// MNIST's four IDX files (gzip or not), padded to 32x32, one channel.
    Mnist,
    /// MNIST's digits at their own 28x28 (at most two levels divide 28).
    Mnist28,
    /// SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`), 3x32x32.
    Svhn,
    /// Downsampled ImageNet 32x32 (`train_data_batch_*.npz`, `val_data.npz`), 1,000 classes.
    Imagenet32,
    /// Downsampled ImageNet 64x64, the same files at 64x64.
    Imagenet64,
    /// A folder of PNG and JPEG pictures, centre-cropped and resized to --image-size
    /// (see --channels and --class-folders).
    Folder,
}

/// The flags that say what `--data` holds: `--dataset` and, for a folder of pictures,
/// how to read them.
#[derive(Debug, Clone, Args)]
pub struct DatasetArgs {
    /// Which dataset --data holds, in its official format; the model takes the shape of
    /// its images.
    #[arg(long = "dataset", value_enum, default_value_t = DatasetArg::Cifar10)]
    pub kind: DatasetArg,
    /// --dataset folder: the side of the square images the pictures become (default 64;
    /// each level halves it, so 2^levels must divide it).
    #[arg(long, value_parser = validate::usize_in(1, 4096))]
    pub image_size: Option<usize>,
    /// --dataset folder: 3 for RGB (the default), 1 for greyscale.
    #[arg(long, value_parser = validate::usize_in(1, 3))]
    pub channels: Option<usize>,
    /// --dataset folder: each subfolder of --data is a class (else one class).
    #[arg(long)]
    pub class_folders: bool,
}

impl DatasetArgs {
    /// Whether the flags go together: the folder's options only with `--dataset folder`,
    /// and `--channels` 1 or 3. Checked before any work (a download included).
    pub fn check(&self) -> CliResult<()> {
        let folder_only = [
            ("--image-size", self.image_size.is_some()),
            ("--channels", self.channels.is_some()),
            ("--class-folders", self.class_folders),
        ];
        if let Some((flag, _)) = folder_only.iter().find(|(_, given)| *given) {
            if self.kind != DatasetArg::Folder {
                return Err(usage_error(format!(
                    "{flag} applies to --dataset folder; --dataset {} has its own",
                    self.kind.flag()
                )));
            }
        }
        if self.channels == Some(2) {
            return Err(usage_error(
                "--channels must be 1 (greyscale) or 3 (RGB), got 2",
            ));
        }
        Ok(())
    }

    /// The dataset at `path` (`None`: CIFAR-10's built-in sample, the only default).
    pub fn load(&self, path: Option<&Path>) -> CliResult<Box<dyn ImageSplits>> {
        use glow::data::{cifar100, folder, imagenet, mnist, svhn};
        self.check()?;
        let Some(path) = path else {
            if self.kind == DatasetArg::Cifar10 {
                return Ok(Box::new(Cifar10::load(glow::data::default_data_dir())?));
            }
            return Err(usage_error(format!(
                "--dataset {} needs --data: the folder of its files (the README's list of \
                 datasets says where each comes from); only cifar10 has a built-in sample",
                self.kind.flag()
            )));
        };
        Ok(match self.kind {
            DatasetArg::Cifar10 => Box::new(Cifar10::load(path)?),
            DatasetArg::Cifar100 => {
                Box::new(cifar100::Cifar100::load(path, cifar100::Labels::Fine)?)
            }
            DatasetArg::Cifar100Coarse => {
                Box::new(cifar100::Cifar100::load(path, cifar100::Labels::Coarse)?)
            }
            DatasetArg::Mnist => Box::new(mnist::Mnist::load(path, true)?),
            DatasetArg::Mnist28 => Box::new(mnist::Mnist::load(path, false)?),
            DatasetArg::Svhn => Box::new(svhn::Svhn::load(path)?),
            DatasetArg::Imagenet32 => Box::new(imagenet::ImageNet::load(path, 32)?),
            DatasetArg::Imagenet64 => Box::new(imagenet::ImageNet::load(path, 64)?),
            DatasetArg::Folder => Box::new(folder::ImageFolder::load(
                path,
                folder::FolderOptions {
                    size: self.image_size.unwrap_or(64),
                    channels: self.channels.unwrap_or(3),
                    class_folders: self.class_folders,
                },
            )?),
        })
    }
}

impl DatasetArg {
    /// The flag's value, as the user writes it.
    pub fn flag(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// The training and test images of the official files `--download` fetches (their
    /// checksums are verified, so the counts are known before the download), or `None`
    /// when this dataset cannot be downloaded.
    pub fn official_counts(self) -> Option<(usize, usize)> {
        match self {
            DatasetArg::Cifar10 | DatasetArg::Cifar100 | DatasetArg::Cifar100Coarse => {
                Some((50_000, 10_000))
            }
            DatasetArg::Mnist | DatasetArg::Mnist28 => Some((60_000, 10_000)),
            DatasetArg::Svhn => Some((73_257, 26_032)),
            DatasetArg::Imagenet32 | DatasetArg::Imagenet64 | DatasetArg::Folder => None,
        }
    }

    /// Downloads this dataset's official files into `dir` (rank 0 of `comm` fetches while
    /// the others wait) and returns where its loader finds them.
    pub fn download(self, dir: &Path, comm: &dyn glow::parallel::Collective) -> CliResult<PathBuf> {
        use glow::download as dl;
        let path = dl::on_ranks(comm, || match self {
            DatasetArg::Cifar10 => dl::download_cifar10(dir, dl::CIFAR10_URL),
            DatasetArg::Cifar100 | DatasetArg::Cifar100Coarse => dl::download_cifar100(dir),
            DatasetArg::Mnist | DatasetArg::Mnist28 => dl::download_files(dir, &dl::MNIST_FILES),
            DatasetArg::Svhn => dl::download_files(dir, &dl::SVHN_FILES),
            _ => Err(engine::Error::invalid(
                "download",
                format!("--dataset {} cannot be downloaded", self.flag()),
            )),
        })?;
        Ok(path)
    }
}

/// `--coupling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CouplingArg {
    /// Affine coupling.
    Affine,
    /// Additive coupling.
    Additive,
}

/// `--permutation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermutationArg {
    /// Invertible 1x1 convolution.
    Invconv,
    /// LU-decomposed invertible 1x1 convolution.
    InvconvLu,
    /// Fixed random shuffle.
    Shuffle,
    /// Fixed reversal.
    Reverse,
}

/// `--memory`: what a training step keeps for its backward pass (see `glow::Memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MemoryArg {
    /// Keep every flow step's activations (fastest; memory grows with depth).
    Stored,
    /// Rebuild them by the inverse in backward (memory does not grow with depth).
    Reversible,
}

impl From<MemoryArg> for Memory {
    fn from(m: MemoryArg) -> Memory {
        match m {
            MemoryArg::Stored => Memory::Stored,
            MemoryArg::Reversible => Memory::Reversible,
        }
    }
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Adamax (the paper's choice).
    Adamax,
    /// Adam.
    Adam,
}

impl From<OptimizerArg> for AdamKind {
    fn from(o: OptimizerArg) -> AdamKind {
        match o {
            OptimizerArg::Adamax => AdamKind::Adamax,
            OptimizerArg::Adam => AdamKind::Adam,
        }
    }
}

/// The flags that describe a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Levels L (squeeze, K steps, split): each halves the image, so at most 5 for 32x32
    /// images (checked against the data).
    #[arg(long, default_value_t = 3)]
    #[arg(allow_hyphen_values = true, value_parser = validate::levels())]
    pub levels: usize,
    /// Flow steps per level K (1-1024). The default is small for speed; the paper's K is 32.
    #[arg(long, default_value_t = 8)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, validate::MAX_DEPTH))]
    pub depth: usize,
    /// Channels of each coupling network (1-8192). The default is small for speed; the
    /// paper's is 512.
    #[arg(long, default_value_t = 128)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, validate::MAX_HIDDEN))]
    pub hidden: usize,
    /// Coupling layer.
    #[arg(long, value_enum, default_value_t = CouplingArg::Affine)]
    pub coupling: CouplingArg,
    /// Channel mixing between couplings.
    #[arg(long, value_enum, default_value_t = PermutationArg::InvconvLu)]
    pub permutation: PermutationArg,
    /// Learn the top prior (else a standard normal).
    #[arg(long, overrides_with = "no_learn_top")]
    pub learn_top: bool,
    /// A standard normal top prior (undoes a preset's --learn-top).
    #[arg(long, overrides_with = "learn_top")]
    pub no_learn_top: bool,
    /// Class-conditional priors and a classifier head.
    #[arg(long)]
    pub y_condition: bool,
    /// With --y-condition, the weight of the classifier's cross-entropy in bits added to
    /// the bits/dim in the loss (>= 0), as openai/glow's --weight_y (default 0 there). The
    /// port weighs the cross-entropy in nats: its 0.01 is 0.0069315 here.
    #[arg(long, default_value_t = 0.01)]
    #[arg(allow_hyphen_values = true, value_parser = validate::finite_non_negative_f32())]
    pub y_weight: f32,
    /// Bits per colour channel kept (1-8).
    #[arg(long, default_value_t = 8)]
    #[arg(allow_hyphen_values = true, value_parser = validate::n_bits())]
    pub n_bits: u32,
    /// Stored or reversible backward.
    #[arg(long, value_enum, default_value_t = MemoryArg::Stored)]
    pub memory: MemoryArg,
}

impl ModelArgs {
    /// The model configuration for the images of `data`.
    pub fn config(&self, seed: u64, data: &dyn ImageSplits) -> GlowConfig {
        GlowConfig {
            image_shape: data.image_shape(),
            num_classes: data.num_classes(),
            levels: self.levels,
            depth: self.depth,
            hidden: self.hidden,
            coupling: match self.coupling {
                CouplingArg::Affine => Coupling::Affine,
                CouplingArg::Additive => Coupling::Additive,
            },
            permutation: match self.permutation {
                PermutationArg::Invconv => Permutation::Invconv,
                PermutationArg::InvconvLu => Permutation::InvconvLu,
                PermutationArg::Shuffle => Permutation::Shuffle,
                PermutationArg::Reverse => Permutation::Reverse,
            },
            learn_top: self.learn_top,
            y_condition: self.y_condition,
            y_weight: self.y_weight,
            n_bits: self.n_bits,
            seed,
            memory: self.memory.into(),
        }
    }
}

/// `--split`: which split of the dataset an example reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The test split.
    Test,
    /// The training split (as stored: no augmentation).
    Train,
}

impl SplitArg {
    /// The split's name in messages: `test` or `training`.
    pub fn name(self) -> &'static str {
        match self {
            SplitArg::Test => "test",
            SplitArg::Train => "training",
        }
    }

    /// The split of `data`.
    pub fn of(self, data: &dyn ImageSplits) -> &glow::data::Dataset {
        match self {
            SplitArg::Test => data.test(),
            SplitArg::Train => data.train(),
        }
    }
}

/// `--dequant`: how an example dequantises the pixels it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DequantArg {
    /// Uniform noise in each pixel's bin, fixed per image by --seed.
    Noise,
    /// The centre of each pixel's bin (latents encoded so decode to the same bytes).
    Midpoint,
}

impl DequantArg {
    /// The dequantisation of a batch whose first image is image `first_index` of its
    /// split, with noise of `seed`.
    pub fn of(self, seed: u64, first_index: u64) -> glow::Dequantization {
        match self {
            DequantArg::Midpoint => glow::Dequantization::Midpoint,
            DequantArg::Noise => glow::Dequantization::PerImage { seed, first_index },
        }
    }
}

/// `--matmul-precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 products everywhere.
    F32,
    /// The coupling networks' convolution passes with 64 or more output rows round their
    /// operands to bf16 and accumulate in f32, on a CPU with AVX-512 BF16.
    Bf16,
}

/// `--matmul-precision`, shared by the examples that run a model.
#[derive(Debug, Clone, Args)]
pub struct PrecisionArgs {
    /// Precision of the coupling networks' products on the CPU device (`engine::precision`):
    /// bf16 rounds their operands to bfloat16 where the CPU has AVX-512 BF16 (else f32,
    /// said at start). The flow stays invertible and its likelihood exact for the
    /// networks' outputs, its numerical inverse a little looser than in f32; the Vulkan
    /// and reference devices compute in f32. A first
    /// version: about a fifth faster a step at 512 channels, nothing gained at 128, more
    /// memory (docs/measurements.md).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub matmul_precision: PrecisionArg,
}

impl PrecisionArgs {
    /// Sets the process's precision for computing on `device` and says what it got when
    /// bf16 was asked for.
    pub fn apply(&self, device: &Device) {
        use engine::precision::{set_matmul_precision, MatmulPrecision};
        if self.matmul_precision == PrecisionArg::F32 {
            set_matmul_precision(MatmulPrecision::F32);
            return;
        }
        let got = set_matmul_precision(MatmulPrecision::Bf16);
        let line = match (device, got) {
            (Device::Cpu, MatmulPrecision::Bf16) => {
                "matmul precision: bf16 (the coupling networks' wide convolution passes)"
            }
            (Device::Cpu, _) => "matmul precision: f32 (this CPU has no AVX-512 BF16)",
            _ => "matmul precision: f32 (only the CPU device has bf16 products)",
        };
        eprintln!("{line}");
    }
}

/// `--detect-anomaly`, shared by the examples that run a model (flattened into
/// [`CheckpointArgs`], and into the Args of `train_cifar10` and `sample`).
#[derive(Debug, Clone, Args)]
pub struct AnomalyArgs {
    /// Check every op's output for NaN and infinity (forward, backward and the optimiser
    /// update) and stop at the first op that makes one from finite inputs, naming the op
    /// and its layer. Several times slower.
    #[arg(long)]
    pub detect_anomaly: bool,
}

impl AnomalyArgs {
    /// Turns anomaly detection on for this thread when `--detect-anomaly` was given (see
    /// `engine::anomaly`).
    pub fn apply(&self) {
        if self.detect_anomaly {
            engine::anomaly::set_enabled(true);
            eprintln!("anomaly detection: on (every op is checked for NaN and infinity)");
        }
    }
}

/// The flags of the examples that work on a trained model and the dataset.
#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// The checkpoint to use (e.g. runs/cifar10/checkpoint.safetensors).
    #[arg(long)]
    #[arg(value_parser = validate::existing_file())]
    pub checkpoint: PathBuf,
    /// The dataset's files: for CIFAR-10 a directory or .bin file (default: the
    /// built-in sample); for the others their folder.
    #[arg(long)]
    #[arg(value_parser = validate::existing_path())]
    pub data: Option<PathBuf>,
    /// What `--data` holds (the model's images must have the same shape).
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub anomaly: AnomalyArgs,
    /// Stored or reversible backward (default: the checkpoint's).
    #[arg(long, value_enum)]
    pub memory: Option<MemoryArg>,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Which weights: the moving average's when the checkpoint kept one (a run with
    /// --ema), else the trained ones.
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto)]
    pub weights: WeightsArg,
}

/// `--weights`: a checkpoint's trained weights or their moving average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    /// The moving average when the checkpoint holds one, else the trained weights.
    Auto,
    /// The moving average (an error when the checkpoint holds none).
    Ema,
    /// The trained weights.
    Raw,
}

impl CheckpointArgs {
    /// The model on the chosen device, the dataset, and what `check` made of the
    /// dataset. The dataset is read first and handed to `check` (e.g. [`validate::index`]
    /// of an image against the test split), so that a bad flag is reported before a
    /// device is chosen or a model built. Applies `--detect-anomaly` and `--memory`.
    pub fn open<T>(
        &self,
        check: impl FnOnce(&dyn ImageSplits) -> CliResult<T>,
    ) -> CliResult<(Glow, Box<dyn ImageSplits>, T)> {
        let (model, data, checked, _) = self.open_saying_weights(check)?;
        Ok((model, data, checked))
    }

    /// [`CheckpointArgs::open`], also saying whether the model has the moving average's
    /// weights (`true`) or the trained ones.
    pub fn open_saying_weights<T>(
        &self,
        check: impl FnOnce(&dyn ImageSplits) -> CliResult<T>,
    ) -> CliResult<(Glow, Box<dyn ImageSplits>, T, bool)> {
        let data = self.dataset.load(self.data.as_deref())?;
        let checked = check(data.as_ref())?;
        self.anomaly.apply();
        let (mut model, device, averaged) =
            open_checkpoint_weights(&self.checkpoint, self.device, self.weights)?;
        self.precision.apply(&device);
        let (want, have) = (model.config().image_shape, data.image_shape());
        if want != have {
            let source = match &self.data {
                Some(p) => p.display().to_string(),
                None => "the built-in sample".into(),
            };
            return Err(usage_error(format!(
                "--dataset {} at {source} holds {have:?} images and the model of {} takes \
                 {want:?} ones (give the --dataset and --data it was trained on)",
                self.dataset.kind.flag(),
                self.checkpoint.display()
            )));
        }
        if let Some(m) = self.memory {
            model.set_memory(m.into());
        }
        Ok((model, data, checked, averaged))
    }
}

/// Prints the one JSON line that ends every example's output.
pub fn print_summary(value: serde_json::Value) {
    println!("{value}");
}

/// Reads a checkpoint, picks the device for `choice`, says which on stderr, and restores
/// the model on it. The file is read and checked first, so a damaged one is reported
/// before the device is chosen (which may take seconds of calibration).
/// The weights are the moving average's when the checkpoint holds one
/// ([`WeightsArg::Auto`]).
pub fn open_checkpoint(path: &Path, choice: DeviceChoice) -> Result<(Glow, Device)> {
    let (model, device, _) = open_checkpoint_weights(path, choice, WeightsArg::Auto)?;
    Ok((model, device))
}

/// [`open_checkpoint`] with the [`WeightsArg`] to use, said on stderr when they are the
/// moving average; the last value says whether they are (`true`) or the trained ones.
pub fn open_checkpoint_weights(
    path: &Path,
    choice: DeviceChoice,
    weights: WeightsArg,
) -> Result<(Glow, Device, bool)> {
    let checkpoint = glow::checkpoint::load_checkpoint(path)?;
    let has_average = !checkpoint.optimizer.averages.is_empty()
        && checkpoint.optimizer.config.ema_decay.is_some();
    if weights == WeightsArg::Ema && !has_average {
        return Err(engine::Error::invalid(
            "--weights ema",
            format!(
                "{} holds no moving average of the weights (its run had no --ema)",
                path.display()
            ),
        ));
    }
    let (device, why) = glow::device::pick(choice.into())?;
    eprintln!("device: {} ({why})", device.name());
    let (model, optimizer) = checkpoint.restore(&device)?;
    if weights != WeightsArg::Raw {
        if let Some(averaged) = optimizer.averaged_model(&model)? {
            eprintln!("weights: the moving average (--weights raw for the trained ones)");
            return Ok((averaged, device, true));
        }
    }
    Ok((model, device, false))
}

/// Creates the parent directory of an output file.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| {
            engine::Error::invalid("output", format!("cannot create {}: {e}", dir.display()))
        }),
        None => Ok(()),
    }
}

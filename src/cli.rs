//! What the examples share: the flags that describe a model, device choice, data loading,
//! the machine-readable last line, and how a run ends on an error ([`exit_on_error`]; the
//! rules every flag is checked by are in [`validate`]). Sample grids are `glow::picture`'s.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use engine::backend::AdamKind;
#[cfg(feature = "vulkan")]
use engine::Tensor;
use engine::{Device, Result};
use glow::data::{Cifar10, ImageSplits};
use glow::{Coupling, Glow, GlowConfig, Memory, Permutation};

pub mod resume;
pub mod validate;

/// `--device`.
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
    /// Flow steps per level K (1-1024).
    #[arg(long, default_value_t = 8)]
    #[arg(allow_hyphen_values = true, value_parser = validate::usize_in(1, validate::MAX_DEPTH))]
    pub depth: usize,
    /// Channels of each coupling network (1-8192).
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
    #[arg(long)]
    pub learn_top: bool,
    /// Class-conditional priors and a classifier head.
    #[arg(long)]
    pub y_condition: bool,
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
            n_bits: self.n_bits,
            seed,
            memory: self.memory.into(),
            ..GlowConfig::default()
        }
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
    /// CIFAR-10 directory or .bin file (default: the built-in sample).
    #[arg(long)]
    #[arg(value_parser = validate::existing_path())]
    pub data: Option<PathBuf>,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub anomaly: AnomalyArgs,
    /// Stored or reversible backward (default: the checkpoint's).
    #[arg(long, value_enum)]
    pub memory: Option<MemoryArg>,
}

impl CheckpointArgs {
    /// The model on the chosen device, the dataset, and what `check` made of the
    /// dataset. The dataset is read first and handed to `check` (e.g. [`validate::index`]
    /// of an image against the test split), so that a bad flag is reported before a
    /// device is chosen or a model built. Applies `--detect-anomaly` and `--memory`.
    pub fn open<T>(&self, check: impl FnOnce(&Cifar10) -> Result<T>) -> Result<(Glow, Cifar10, T)> {
        let data = load_data(self.data.as_deref())?;
        let checked = check(&data)?;
        self.anomaly.apply();
        let (mut model, _) = open_checkpoint(&self.checkpoint, self.device)?;
        let (want, have) = (model.config().image_shape, data.image_shape());
        if want != have {
            return Err(validate::usage_error(format!(
                "--data holds {have:?} images and the model of {} takes {want:?} ones",
                self.checkpoint.display()
            )));
        }
        if let Some(m) = self.memory {
            model.set_memory(m.into());
        }
        Ok((model, data, checked))
    }
}

/// The ranks of this run: MPI's world when built with the `mpi` feature (one rank when
/// not started by `mpirun`), else [`glow::parallel::Solo`]. When several ranks share
/// this machine and `RAYON_NUM_THREADS` is not set, the CPU device's thread pool gets
/// an equal share of the cores, so the ranks do not fight over them.
pub fn collective() -> Result<std::sync::Arc<dyn glow::parallel::Collective>> {
    #[cfg(feature = "mpi")]
    {
        use glow::parallel::Collective;
        let world = glow::parallel::mpi::MpiWorld::init()?;
        let local: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(world.size());
        if local > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            // Fails only when the pool exists already; then it keeps its size.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads((cores / local).max(1))
                .build_global();
        }
        Ok(std::sync::Arc::new(world))
    }
    #[cfg(not(feature = "mpi"))]
    {
        // Started by a launcher as one of several ranks, a build without MPI would be N
        // separate runs writing the same files.
        let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find_map(|v| v.parse::<usize>().ok().filter(|&n| n > 1));
        if let Some(n) = launched {
            return Err(engine::Error::invalid(
                "data-parallel run",
                format!(
                    "started as one of {n} MPI ranks, but this build has no MPI: build with \
                     `--features mpi`"
                ),
            ));
        }
        Ok(std::sync::Arc::new(glow::parallel::Solo))
    }
}

/// [`pick_device`] for rank `rank` of `size`: with more than one rank, `--device vulkan`
/// (and `auto` on a machine with GPUs) takes GPU `rank mod count` (any Vulkan device
/// when there is no GPU), so one machine with several GPUs runs one rank per GPU; `auto`
/// without a GPU is the CPU device on every rank, since ranks that timed the devices
/// each for itself could choose differently and round differently.
pub fn pick_device_for_rank(
    choice: DeviceChoice,
    rank: usize,
    size: usize,
) -> Result<(Device, String)> {
    if size == 1 {
        return pick_device(choice);
    }
    #[cfg(feature = "vulkan")]
    {
        use engine::vulkan::{enumerate_devices, DeviceKind, DeviceSelector, VulkanOptions};
        let gpus = || -> Result<Vec<usize>> {
            Ok(enumerate_devices()?
                .iter()
                .filter(|d| d.kind != DeviceKind::Cpu)
                .map(|d| d.index)
                .collect())
        };
        let open = |index: usize, count: usize| -> Result<(Device, String)> {
            let options = VulkanOptions {
                device: Some(DeviceSelector::Index(index)),
                ..VulkanOptions::from_env()
            };
            let dev = Device::Vulkan(engine::vulkan::VulkanDevice::new(options)?);
            Ok((
                dev,
                format!("rank {rank} of {size}: Vulkan device {index}, rank mod {count}"),
            ))
        };
        match choice {
            DeviceChoice::Vulkan => {
                let gpus = gpus()?;
                if !gpus.is_empty() {
                    return open(gpus[rank % gpus.len()], gpus.len());
                }
                let count = enumerate_devices()?.len();
                if count == 0 {
                    return Err(engine::Error::Device("no Vulkan device found".into()));
                }
                return open(rank % count, count);
            }
            DeviceChoice::Auto => {
                let gpus = gpus()?;
                if !gpus.is_empty() {
                    return open(gpus[rank % gpus.len()], gpus.len());
                }
            }
            _ => {}
        }
    }
    if choice == DeviceChoice::Auto {
        return Ok((
            Device::Cpu,
            format!("rank {rank} of {size}: no GPU, the CPU device on every rank"),
        ));
    }
    pick_device(choice)
}

/// Picks the device for `choice` and says why.
pub fn pick_device(choice: DeviceChoice) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "requested with --device cpu".into())),
        DeviceChoice::Reference => Ok((
            Device::Reference,
            "requested with --device reference".into(),
        )),
        DeviceChoice::Vulkan => vulkan_device(),
        DeviceChoice::Auto => auto_device(),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan_device() -> Result<(Device, String)> {
    let dev = Device::vulkan()?;
    Ok((dev, "requested with --device vulkan".into()))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan_device() -> Result<(Device, String)> {
    Err(engine::Error::Device(
        "this build has no Vulkan device (built without the `vulkan` feature)".into(),
    ))
}

#[cfg(not(feature = "vulkan"))]
fn auto_device() -> Result<(Device, String)> {
    Ok((Device::Cpu, "built without the `vulkan` feature".into()))
}

#[cfg(feature = "vulkan")]
fn auto_device() -> Result<(Device, String)> {
    use engine::vulkan::{enumerate_devices, DeviceKind};
    let devices = match enumerate_devices() {
        Ok(d) => d,
        Err(e) => return Ok((Device::Cpu, format!("no Vulkan: {e}"))),
    };
    if let Some(gpu) = devices.iter().find(|d| d.kind != DeviceKind::Cpu) {
        let dev = Device::vulkan()?;
        return Ok((
            dev,
            format!("a real GPU is present ({}, {:?})", gpu.name, gpu.kind),
        ));
    }
    if devices.is_empty() {
        return Ok((Device::Cpu, "no Vulkan device found".into()));
    }
    // Only CPU Vulkan drivers: time one training-shaped convolution on each.
    let vk = Device::vulkan()?;
    let (cpu_ms, vk_ms) = (calibrate(&Device::Cpu)?, calibrate(&vk)?);
    if vk_ms < cpu_ms {
        Ok((vk, format!("no GPU; the CPU Vulkan driver was faster ({vk_ms:.1} ms vs {cpu_ms:.1} ms for a conv step)")))
    } else {
        Ok((Device::Cpu, format!("no GPU; the CPU device was faster than the CPU Vulkan driver ({cpu_ms:.1} ms vs {vk_ms:.1} ms for a conv step)")))
    }
}

/// Milliseconds for a forward and backward 3x3 convolution at Glow's first-level shape
/// (best of three after a warm-up).
#[cfg(feature = "vulkan")]
fn calibrate(dev: &Device) -> Result<f64> {
    let x = Tensor::randn(&[16, 6, 16, 16], 0.0, 1.0, 1, dev)?;
    let w = Tensor::randn(&[128, 6, 3, 3], 0.0, 0.05, 2, dev)?.with_grad();
    let run = || -> Result<f64> {
        let t = std::time::Instant::now();
        let g = x.conv2d(&w, None)?.square()?.sum_all()?.backward()?;
        g.get(&w).map(|g| g.to_vec()).transpose()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(run()?);
    }
    Ok(best)
}

/// The dataset at `--data`, or the built-in sample.
pub fn load_data(path: Option<&Path>) -> Result<Cifar10> {
    let path: PathBuf = path
        .map(Path::to_path_buf)
        .unwrap_or_else(glow::data::default_data_dir);
    Cifar10::load(&path)
}

/// Prints the one JSON line that ends every example's output.
pub fn print_summary(value: serde_json::Value) {
    println!("{value}");
}

/// The exit status of a wrong command line: a flag's value outside its rule, or too
/// large for the data it names, or a path that does not exist or is of the wrong kind
/// (see [`validate`]). Clap's own usage errors (an unknown flag) exit with it too.
pub const EXIT_USAGE: i32 = 2;

/// The exit status of a failure while working: a file that cannot be read or is not
/// what it should be (a damaged checkpoint), a device error, an output that cannot be
/// written.
pub const EXIT_FAILURE: i32 = 1;

/// Ends an example's `run`: on an error, prints one line, `error: …`, on stderr and
/// exits with [`EXIT_USAGE`] (2) for a [`validate::usage_error`] or [`EXIT_FAILURE`] (1)
/// for any other error.
pub fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        match validate::usage_message(&e) {
            Some(msg) => {
                eprintln!("error: {msg}");
                std::process::exit(EXIT_USAGE);
            }
            None => {
                eprintln!("error: {e}");
                std::process::exit(EXIT_FAILURE);
            }
        }
    }
}

/// Reads a checkpoint, picks the device for `choice`, says which on stderr, and restores
/// the model on it. The file is read and checked first, so a damaged one is reported
/// before the device is chosen (which may take seconds of calibration).
pub fn open_checkpoint(path: &Path, choice: DeviceChoice) -> Result<(Glow, Device)> {
    let checkpoint = glow::checkpoint::load_checkpoint(path)?;
    let (device, why) = pick_device(choice)?;
    eprintln!("device: {} ({why})", device.name());
    let (model, _) = checkpoint.restore(&device)?;
    Ok((model, device))
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

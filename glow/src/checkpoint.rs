//! Checkpoints: the model, the optimiser and the training position in one safetensors file.
//!
//! A checkpoint holds every model state tensor under its state name (PyTorch layouts, as
//! [`Glow::state`] gives them), the optimiser's moments as `optimizer.{param}.m` and
//! `optimizer.{param}.v`, the moving averages of the weights (when the run keeps them)
//! as `ema.{param}`, and in the safetensors `__metadata__` map the format version,
//! the [`GlowConfig`] and the optimiser settings as JSON, the optimiser's step counter,
//! the [`TrainState`] and a CRC-32 of every tensor's bytes. `docs/checkpoint-format.md`
//! describes the file for readers in other frameworks.
//!
//! Save with [`save_checkpoint`]; read with [`load_checkpoint`] (host side, checks the
//! file) and rebuild the model and optimiser on a device with [`Checkpoint::restore`], or
//! do both with [`resume`]. Writes are atomic ([`crate::atomic`]): a crash while saving
//! leaves the previous checkpoint intact. Reads verify each tensor's checksum, so a file
//! damaged after it was written is refused, naming the tensor; a NaN or an infinity in
//! any tensor is refused both ways, so a run never saves, or resumes from, a model that
//! has already diverged. Every error names the file.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use engine::backend::AdamKind;
use engine::{Device, Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::atomic::{io_error, write_atomic};
use crate::config::GlowConfig;
use crate::model::Glow;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::param::{ModelState, StateTensor};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "glow-rs-checkpoint";
/// The value of the `format_version` metadata key; bumped when the layout changes.
/// Version 2 added [`keys::CHECKSUMS`]; version 3 the moving averages ([`EMA_PREFIX`])
/// and the optimiser settings `max_grad_value` and `ema_decay`, all optional: a file
/// without them is read as one of a run that had none.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version [`load_checkpoint`] reads: version 1, the same file without
/// checksums, whose tensors are read unverified.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Prefix of the optimiser's tensors: `optimizer.{param}.m` and `optimizer.{param}.v`.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Prefix of the moving averages of the weights: `ema.{param}`, one per trainable
/// parameter, in the parameter's layout (see [`crate::optim`]).
pub const EMA_PREFIX: &str = "ema.";

/// Metadata keys (see `docs/checkpoint-format.md`).
pub mod keys {
    /// Always [`super::FORMAT`].
    pub const FORMAT: &str = "format";
    /// [`super::FORMAT_VERSION`] in decimal.
    pub const FORMAT_VERSION: &str = "format_version";
    /// The [`crate::GlowConfig`] as JSON.
    pub const GLOW_CONFIG: &str = "glow.config";
    /// The optimiser settings as JSON.
    pub const OPTIMIZER_CONFIG: &str = "optimizer.config";
    /// The optimiser's step counter (bias correction, warmup) in decimal.
    pub const OPTIMIZER_STEP: &str = "optimizer.step";
    /// [`super::TrainState::seed`] in decimal.
    pub const TRAIN_SEED: &str = "train.seed";
    /// [`super::TrainState::step`] in decimal.
    pub const TRAIN_STEP: &str = "train.step";
    /// [`super::TrainState::epoch`] in decimal.
    pub const TRAIN_EPOCH: &str = "train.epoch";
    /// [`super::TrainState::position_in_epoch`] in decimal.
    pub const TRAIN_POSITION: &str = "train.position_in_epoch";
    /// [`super::TrainState::data_crc32`] as 8 lowercase hex digits; absent when unknown
    /// (optional: files without it load as before).
    pub const TRAIN_DATA_CRC32: &str = "train.data_crc32";
    /// Every tensor's CRC-32 as JSON: `{"name": "8 hex digits", ...}` (see
    /// [`super::tensor_checksum`]). Since format version 2.
    pub const CHECKSUMS: &str = "checksums.crc32";
}

/// The checksum stored for a tensor: the CRC-32 (IEEE, as zlib and PNG compute it) of its
/// little-endian data bytes, as 8 lowercase hex digits.
pub fn tensor_checksum(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// The name of the first tensor among `tensors` holding a NaN or an infinity, with the
/// offending value and its flat index.
fn first_non_finite<'a>(tensors: impl IntoIterator<Item = &'a StateTensor>) -> Option<String> {
    tensors.into_iter().find_map(|t| {
        let (k, v) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite())?;
        Some(format!("tensor {} holds {v} (at flat index {k})", t.name))
    })
}

/// Where training stands. All training randomness (data order, dequantisation noise) is
/// counter-based from `(seed, step/epoch)`, so this is the whole random state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainState {
    /// The training run's seed.
    pub seed: u64,
    /// Training steps taken.
    pub step: u64,
    /// Completed epochs.
    pub epoch: u64,
    /// Examples of the current epoch already consumed.
    pub position_in_epoch: u64,
    /// The training split the run trains on, as [`crate::data::Dataset::fingerprint`]
    /// gives it, so that a resume on other images is refused. `None` in checkpoints
    /// written before it was recorded (and by code that does not know its data).
    pub data_crc32: Option<u32>,
}

/// The optimiser as stored: settings, step counter and host copies of the moments.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Settings.
    pub config: OptimizerConfig,
    /// [`Optimizer::step`].
    pub step: u32,
    /// `(m, v)` per parameter name.
    pub moments: BTreeMap<String, (StateTensor, StateTensor)>,
    /// [`Optimizer::averages`], by parameter name (empty when the run kept none).
    pub averages: BTreeMap<String, StateTensor>,
}

/// A checkpoint read into host memory by [`load_checkpoint`].
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The file it was read from (named in errors).
    pub path: PathBuf,
    /// The file's format version: [`FORMAT_VERSION`], or an older one still read (whose
    /// tensors carried no checksums to verify).
    pub format_version: u32,
    /// The model's architecture.
    pub config: GlowConfig,
    /// Every model state tensor, sorted by name.
    pub model_state: ModelState,
    /// The optimiser.
    pub optimizer: OptimizerState,
    /// Where training stands.
    pub train: TrainState,
}

/// [`OptimizerConfig`] as JSON. A mirror rather than a derive because [`AdamKind`] lives
/// in the engine, which has no serde; the destructuring in `From` makes a new field of
/// [`OptimizerConfig`] a compile error here rather than a silently dropped setting.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct OptimizerConfigJson {
    /// `"adam"` or `"adamax"`.
    kind: String,
    lr: f32,
    warmup: u32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    max_grad_norm: Option<f32>,
    /// Since format version 3; absent: none.
    #[serde(default)]
    max_grad_value: Option<f32>,
    /// Since format version 3; absent: none.
    #[serde(default)]
    ema_decay: Option<f32>,
}

impl From<&OptimizerConfig> for OptimizerConfigJson {
    fn from(c: &OptimizerConfig) -> Self {
        let OptimizerConfig {
            kind,
            lr,
            warmup,
            betas,
            eps,
            weight_decay,
            max_grad_norm,
            max_grad_value,
            ema_decay,
        } = *c;
        let kind = match kind {
            AdamKind::Adam => "adam",
            AdamKind::Adamax => "adamax",
        };
        OptimizerConfigJson {
            kind: kind.into(),
            lr,
            warmup,
            betas,
            eps,
            weight_decay,
            max_grad_norm,
            max_grad_value,
            ema_decay,
        }
    }
}

impl OptimizerConfigJson {
    fn to_config(&self) -> std::result::Result<OptimizerConfig, String> {
        if let Some(d) = self.ema_decay.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            return Err(format!("ema_decay must be in (0, 1), got {d}"));
        }
        if let Some(v) = self.max_grad_value.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(format!(
                "max_grad_value must be a finite number > 0, got {v}"
            ));
        }
        let kind = match self.kind.as_str() {
            "adam" => AdamKind::Adam,
            "adamax" => AdamKind::Adamax,
            other => return Err(format!("unknown optimiser kind {other:?}")),
        };
        Ok(OptimizerConfig {
            kind,
            lr: self.lr,
            warmup: self.warmup,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            max_grad_value: self.max_grad_value,
            ema_decay: self.ema_decay,
        })
    }
}

/// A host tensor as safetensors writes it: little-endian `f32` (checkpoints and
/// [`crate::latents`] files).
pub(crate) struct F32View<'a> {
    /// Extents.
    pub(crate) shape: &'a [usize],
    /// Row-major values.
    pub(crate) data: &'a [f32],
}

/// The values of a safetensors `F32` tensor's little-endian bytes.
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Serialises `value` as JSON and checks that it reads back equal (non-finite floats, for
/// one, would come back as `null`), so a checkpoint is never written that cannot be read.
fn to_json<T: Serialize + for<'de> Deserialize<'de> + PartialEq>(
    path: &Path,
    what: &str,
    value: &T,
) -> Result<String> {
    let json = serde_json::to_string(value).map_err(|e| io_error(path, what, e))?;
    match serde_json::from_str::<T>(&json) {
        Ok(back) if back == *value => Ok(json),
        _ => Err(Error::io(
            path,
            format!("{what} does not survive JSON (a non-finite number?): {json}"),
        )),
    }
}

/// Saves `model`, `optimizer` and `train` to `path` (conventionally `*.safetensors`),
/// atomically: the file is either the previous checkpoint or this one, never a mix.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    model: &Glow,
    optimizer: &Optimizer,
    train: &TrainState,
) -> Result<()> {
    let path = path.as_ref();
    let state = model.state()?;
    let mut moments = Vec::with_capacity(optimizer.moments.len());
    for (name, (m, v)) in &optimizer.moments {
        moments.push((
            name,
            StateTensor::from_tensor(format!("{OPTIMIZER_PREFIX}{name}.m"), m)?,
            StateTensor::from_tensor(format!("{OPTIMIZER_PREFIX}{name}.v"), v)?,
        ));
    }
    // Averages are part of the state only while the run keeps them.
    let kept = if optimizer.config.ema_decay.is_some() {
        &optimizer.averages
    } else {
        &BTreeMap::new()
    };
    let averages = kept
        .iter()
        .map(|(name, avg)| StateTensor::from_tensor(format!("{EMA_PREFIX}{name}"), avg))
        .collect::<Result<Vec<_>>>()?;
    let mut tensors: Vec<(String, F32View)> = Vec::new();
    for t in state
        .tensors
        .iter()
        .chain(moments.iter().flat_map(|(_, m, v)| [m, v]))
        .chain(&averages)
    {
        tensors.push((
            t.name.clone(),
            F32View {
                shape: &t.shape,
                data: &t.data,
            },
        ));
    }
    let names: BTreeSet<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != tensors.len() {
        return Err(Error::io(path, "two state tensors share a name"));
    }
    let stored = state
        .tensors
        .iter()
        .chain(moments.iter().flat_map(|(_, m, v)| [m, v]))
        .chain(&averages);
    if let Some(bad) = first_non_finite(stored) {
        return Err(Error::io(
            path,
            format!("not saved: {bad}; a checkpoint holds finite values only"),
        ));
    }
    let checksums: BTreeMap<&str, String> = tensors
        .iter()
        .map(|(name, view)| (name.as_str(), tensor_checksum(&view.data())))
        .collect();

    let meta: HashMap<String, String> = [
        (keys::FORMAT, FORMAT.to_string()),
        (keys::FORMAT_VERSION, FORMAT_VERSION.to_string()),
        (
            keys::GLOW_CONFIG,
            to_json(path, "the model configuration", model.config())?,
        ),
        (
            keys::OPTIMIZER_CONFIG,
            to_json(
                path,
                "the optimiser configuration",
                &OptimizerConfigJson::from(&optimizer.config),
            )?,
        ),
        (keys::OPTIMIZER_STEP, optimizer.step.to_string()),
        (keys::TRAIN_SEED, train.seed.to_string()),
        (keys::TRAIN_STEP, train.step.to_string()),
        (keys::TRAIN_EPOCH, train.epoch.to_string()),
        (keys::TRAIN_POSITION, train.position_in_epoch.to_string()),
        (
            keys::CHECKSUMS,
            serde_json::to_string(&checksums).map_err(|e| io_error(path, "checksums", e))?,
        ),
    ]
    .into_iter()
    .chain(
        train
            .data_crc32
            .map(|crc| (keys::TRAIN_DATA_CRC32, format!("{crc:08x}"))),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    write_atomic(path, |tmp| {
        safetensors::tensor::serialize_to_file(tensors, Some(meta), tmp)
            .map_err(|e| io_error(path, "writing the checkpoint", e))
    })
}

/// What a checkpoint's metadata says, without its tensors: [`read_header`] reads it
/// from the start of the file alone, so that a run can be checked against its folder's
/// checkpoint (its step, model and data) before anything is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointHeader {
    /// The file's format version.
    pub format_version: u32,
    /// The model's architecture.
    pub config: GlowConfig,
    /// The optimiser's settings.
    pub optimizer: OptimizerConfig,
    /// The optimiser's step counter.
    pub optimizer_step: u32,
    /// Where training stands.
    pub train: TrainState,
}

/// The metadata of the checkpoint at `path`, read from the file's header only (the
/// 8-byte length and the JSON after it), with the same checks of the format, version
/// and configurations as [`load_checkpoint`]; the tensors are neither read nor verified.
pub fn read_header(path: impl AsRef<Path>) -> Result<CheckpointHeader> {
    use std::io::Read;
    let path = path.as_ref();
    let mut file =
        std::fs::File::open(path).map_err(|e| io_error(path, "cannot read checkpoint", e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| io_error(path, "not a safetensors file, or truncated", e))?;
    let len = u64::from_le_bytes(len);
    // safetensors' own bound on a header; a damaged length must not allocate terabytes.
    const MAX_HEADER: u64 = 100_000_000;
    if len > MAX_HEADER {
        return Err(Error::io(
            path,
            format!("the header claims {len} bytes: not a safetensors file, or damaged"),
        ));
    }
    let mut json = vec![0u8; len as usize];
    file.read_exact(&mut json)
        .map_err(|e| io_error(path, "not a safetensors file, or truncated", e))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(&json)
        .map_err(|e| io_error(path, "unreadable safetensors header", e))?;
    parse_metadata(path, &header.metadata)
}

/// The checked [`CheckpointHeader`] in the metadata map `meta` of the file `path`.
fn parse_metadata(path: &Path, meta: &HashMap<String, String>) -> Result<CheckpointHeader> {
    let get = |key: &str| -> Result<&str> {
        meta.get(key).map(String::as_str).ok_or_else(|| {
            Error::io(
                path,
                format!("the metadata has no key {key:?}: not a {FORMAT} file, or damaged"),
            )
        })
    };
    let number = |key: &str| -> Result<u64> {
        let s = get(key)?;
        s.parse()
            .map_err(|_| Error::io(path, format!("metadata {key:?} is not a number: {s:?}")))
    };

    if get(keys::FORMAT)? != FORMAT {
        return Err(Error::io(
            path,
            format!("format is {:?}, not {FORMAT:?}", get(keys::FORMAT)?),
        ));
    }
    let version = number(keys::FORMAT_VERSION)?;
    if !(u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
        return Err(Error::io(
            path,
            format!(
                "format version {version}; this build reads versions \
                 {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
            ),
        ));
    }
    let config: GlowConfig = serde_json::from_str(get(keys::GLOW_CONFIG)?)
        .map_err(|e| io_error(path, "bad model configuration", e))?;
    config
        .validate()
        .map_err(|e| io_error(path, "bad model configuration", e))?;
    let optimizer = serde_json::from_str::<OptimizerConfigJson>(get(keys::OPTIMIZER_CONFIG)?)
        .map_err(|e| e.to_string())
        .and_then(|c| c.to_config())
        .map_err(|e| io_error(path, "bad optimiser configuration", e))?;
    let optimizer_step = u32::try_from(number(keys::OPTIMIZER_STEP)?)
        .map_err(|e| io_error(path, "bad optimiser step", e))?;
    let data_crc32 = match meta.get(keys::TRAIN_DATA_CRC32) {
        None => None,
        Some(s) => {
            let hex = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            let parsed = hex.then(|| u32::from_str_radix(s, 16).ok()).flatten();
            Some(parsed.ok_or_else(|| {
                Error::io(
                    path,
                    format!(
                        "metadata {:?} is not 8 lowercase hex digits: {s:?}",
                        keys::TRAIN_DATA_CRC32
                    ),
                )
            })?)
        }
    };
    let train = TrainState {
        seed: number(keys::TRAIN_SEED)?,
        step: number(keys::TRAIN_STEP)?,
        epoch: number(keys::TRAIN_EPOCH)?,
        position_in_epoch: number(keys::TRAIN_POSITION)?,
        data_crc32,
    };
    Ok(CheckpointHeader {
        format_version: version as u32,
        config,
        optimizer,
        optimizer_step,
        train,
    })
}

/// Reads and checks the checkpoint at `path` into host memory. Fails, naming the file,
/// when it is missing, not safetensors, truncated, not a checkpoint of this format (or
/// of a version before [`OLDEST_FORMAT_VERSION`] or after [`FORMAT_VERSION`]), holds an
/// optimiser moment without its partner, or a tensor whose bytes do not match their
/// checksum (naming the tensor: the file was damaged after it was written) or that holds
/// a NaN or an infinity (naming it too). Whether every model tensor is present is
/// checked by [`Checkpoint::restore`], which knows the model.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "cannot read checkpoint", e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| {
        io_error(
            path,
            "not a safetensors file, or truncated (the header or data does not fit)",
            e,
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| io_error(path, "unreadable safetensors header", e))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let CheckpointHeader {
        format_version: version,
        config,
        optimizer: opt_config,
        optimizer_step: opt_step,
        train,
    } = parse_metadata(path, meta)?;
    // Version 1 files carry no checksums; from version 2 on every tensor has one.
    let checksums: Option<BTreeMap<String, String>> = if version >= 2 {
        let json = meta.get(keys::CHECKSUMS).ok_or_else(|| {
            Error::io(
                path,
                format!("the metadata has no key {:?}: damaged", keys::CHECKSUMS),
            )
        })?;
        Some(serde_json::from_str(json).map_err(|e| io_error(path, "bad checksums", e))?)
    } else {
        None
    };

    let mut model_tensors = Vec::new();
    let mut averages = BTreeMap::new();
    let mut halves: BTreeMap<String, (Option<StateTensor>, Option<StateTensor>)> = BTreeMap::new();
    let mut entries = file.tensors();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in entries {
        if view.dtype() != Dtype::F32 {
            return Err(Error::io(
                path,
                format!(
                    "tensor {name} has dtype {:?}; checkpoints hold F32",
                    view.dtype()
                ),
            ));
        }
        if let Some(sums) = &checksums {
            let Some(want) = sums.get(&name) else {
                return Err(Error::io(
                    path,
                    format!("tensor {name} has no checksum in {:?}", keys::CHECKSUMS),
                ));
            };
            let got = tensor_checksum(view.data());
            if got != *want {
                return Err(Error::io(
                    path,
                    format!(
                        "tensor {name} is damaged: its bytes have CRC-32 {got}, \
                         the file recorded {want}"
                    ),
                ));
            }
        }
        let t = StateTensor {
            data: f32s(view.data()),
            shape: view.shape().to_vec(),
            name,
        };
        if let Some(bad) = first_non_finite([&t]) {
            return Err(Error::io(
                path,
                format!("{bad}; a checkpoint holds finite values only"),
            ));
        }
        if let Some(param) = t.name.strip_prefix(EMA_PREFIX) {
            averages.insert(param.to_string(), t);
            continue;
        }
        let Some(rest) = t.name.strip_prefix(OPTIMIZER_PREFIX) else {
            model_tensors.push(t);
            continue;
        };
        let (param, is_m) = if let Some(p) = rest.strip_suffix(".m") {
            (p.to_string(), true)
        } else if let Some(p) = rest.strip_suffix(".v") {
            (p.to_string(), false)
        } else {
            return Err(Error::io(
                path,
                format!("tensor {} is neither an .m nor a .v moment", t.name),
            ));
        };
        let slot = halves.entry(param).or_default();
        if is_m {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    let mut moments = BTreeMap::new();
    for (param, pair) in halves {
        match pair {
            (Some(m), Some(v)) if m.shape == v.shape => {
                moments.insert(param, (m, v));
            }
            (Some(m), Some(v)) => {
                return Err(Error::io(
                    path,
                    format!(
                        "moments of {param} disagree in shape: m {:?}, v {:?}",
                        m.shape, v.shape
                    ),
                ))
            }
            (m, _) => {
                let missing = if m.is_none() { "m" } else { "v" };
                return Err(Error::io(
                    path,
                    format!("missing tensor {OPTIMIZER_PREFIX}{param}.{missing}"),
                ));
            }
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format_version: version,
        config,
        model_state: ModelState {
            tensors: model_tensors,
        },
        optimizer: OptimizerState {
            config: opt_config,
            step: opt_step,
            moments,
            averages,
        },
        train,
    })
}

impl Checkpoint {
    /// Builds the model on `device` with the stored state, and the optimiser with its
    /// moments uploaded. Fails, naming the file, when a model tensor is missing, has the
    /// wrong shape or is not part of the model, or a moment has no trainable parameter.
    pub fn restore(&self, device: &Device) -> Result<(Glow, Optimizer)> {
        let fail = |msg: String| Error::io(&self.path, msg);
        // A damaged configuration can describe a model far larger than the file (a width
        // of 2^40, say): refuse it before building it, since a failed allocation aborts.
        let stored: f64 = self
            .model_state
            .tensors
            .iter()
            .map(|t| t.shape.iter().map(|&d| d as f64).product::<f64>())
            .sum();
        let needed = min_state_elements(&self.config);
        if needed > stored {
            return Err(fail(format!(
                "the configuration (L={}, K={}, hidden={}, image {:?}) needs at least {needed:.3e} \
                 values, more than the {stored} the file holds",
                self.config.levels, self.config.depth, self.config.hidden, self.config.image_shape
            )));
        }
        let model = Glow::new(self.config.clone(), device)
            .map_err(|e| fail(format!("cannot build the model: {e}")))?;
        let expected: BTreeMap<String, Vec<usize>> = model
            .state()?
            .tensors
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        let stored: BTreeMap<&str, &[usize]> = self
            .model_state
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        for (name, shape) in &expected {
            match stored.get(name.as_str()) {
                None => return Err(fail(format!("missing tensor {name}"))),
                Some(s) if s != shape => {
                    return Err(fail(format!(
                        "tensor {name} has shape {s:?}; the model needs {shape:?}"
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = stored.keys().find(|n| !expected.contains_key(**n)) {
            return Err(fail(format!(
                "tensor {extra} is not part of the model its configuration describes"
            )));
        }
        model
            .load_state(&self.model_state)
            .map_err(|e| fail(format!("cannot load the model state: {e}")))?;

        let params: BTreeMap<&str, Vec<usize>> = model
            .trainable_params()
            .into_iter()
            .map(|p| (p.name(), p.shape()))
            .collect();
        let mut moments = BTreeMap::new();
        for (name, (m, v)) in &self.optimizer.moments {
            match params.get(name.as_str()) {
                None => {
                    return Err(fail(format!(
                        "optimiser moments for {name}, which is not a trainable parameter"
                    )))
                }
                Some(shape) if *shape != m.shape => {
                    return Err(fail(format!(
                        "optimiser moments for {name} have shape {:?}; the parameter has {shape:?}",
                        m.shape
                    )))
                }
                Some(_) => {}
            }
            moments.insert(name.clone(), (m.to_tensor(device)?, v.to_tensor(device)?));
        }
        let mut averages = BTreeMap::new();
        for (name, avg) in &self.optimizer.averages {
            match params.get(name.as_str()) {
                Some(shape) if *shape == avg.shape => {
                    averages.insert(name.clone(), avg.to_tensor(device)?);
                }
                Some(shape) => {
                    return Err(fail(format!(
                    "the average {EMA_PREFIX}{name} has shape {:?}; the parameter has {shape:?}",
                    avg.shape
                )))
                }
                None => {
                    return Err(fail(format!(
                        "an average {EMA_PREFIX}{name}, which is not a trainable parameter"
                    )))
                }
            }
        }
        let optimizer = Optimizer {
            config: self.optimizer.config,
            step: self.optimizer.step,
            moments,
            averages,
        };
        Ok((model, optimizer))
    }
}

/// Reads the checkpoint at `path` and restores the model and optimiser on `device`.
pub fn resume(path: impl AsRef<Path>, device: &Device) -> Result<(Glow, Optimizer, TrainState)> {
    let ckpt = load_checkpoint(path)?;
    let (model, optimizer) = ckpt.restore(device)?;
    Ok((model, optimizer, ckpt.train))
}

/// A lower bound on the number of values in the state of the model `c` describes,
/// computed in `f64` so that no configuration overflows it: per flow step, the coupling
/// network's `hidden × hidden` 1x1 convolution, and the channel mixing's `C × C` matrix
/// (a fixed permutation: its `C` indices); the class projection's `num_classes` rows.
fn min_state_elements(c: &GlowConfig) -> f64 {
    let (depth, hidden) = (c.depth as f64, c.hidden as f64);
    let mut channels = c.image_shape[0] as f64;
    let mut total = 0.0;
    for level in 0..c.levels {
        channels *= 4.0; // the squeeze
        let mixing = match c.permutation {
            crate::Permutation::Invconv | crate::Permutation::InvconvLu => channels * channels,
            crate::Permutation::Shuffle | crate::Permutation::Reverse => channels,
        };
        total += depth * (hidden * hidden + mixing);
        if level + 1 < c.levels {
            channels /= 2.0; // the split
        }
    }
    if c.y_condition {
        total += c.num_classes as f64;
    }
    total
}

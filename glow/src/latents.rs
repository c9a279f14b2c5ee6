//! Latent files: the latents of a set of images under a model, as one safetensors file
//! that `examples/encode.rs` writes and `examples/decode.rs` turns back into images.
//!
//! **Tensors** (little-endian `F32`, row-major):
//!
//! | name | shape | what |
//! |---|---|---|
//! | `latent.{k}` | `[N, C_k, H_k, W_k]` | the `k`-th latent of [`Glow::encode`]: each split's `z2` in level order, then the top `z` (`k = 0..L`) |
//! | `labels` | `[N]` | each image's class (0-based), as a float |
//! | `indices` | `[N]` | each image's index in the split it came from, as a float |
//!
//! **Metadata** (`__metadata__`, all strings): `format` = [`FORMAT`], `format_version` =
//! [`FORMAT_VERSION`], `glow.config` (the model's [`GlowConfig`] as JSON, as in a
//! checkpoint), `dequantization` (`midpoint`, or `noise:SEED` for per-image noise of
//! that seed), `weights` (`raw` or `ema`: the checkpoint's trained weights or their
//! moving average, which decoding must use too), `matmul_precision` (`f32` or `bf16`: the
//! coupling networks' products when encoding, `engine::precision`, which decoding must
//! use too to invert as encoded) and `source` (free text: the checkpoint and split they
//! came from).
//!
//! In Python: `safetensors.numpy.load_file(path)` gives the arrays, and
//! `safe_open(path, "np").metadata()` the map.

use std::collections::HashMap;
use std::path::Path;

use engine::{Error, Result, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::atomic::{io_error, write_atomic};
use crate::checkpoint::{f32s, F32View};
use crate::config::GlowConfig;
use crate::model::Glow;

/// The value of the `format` metadata key.
pub const FORMAT: &str = "glow-rs-latents";
/// The value of the `format_version` metadata key.
pub const FORMAT_VERSION: u32 = 1;

/// The latents of `N` images, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Latents {
    /// The model's configuration (which decides every latent's shape).
    pub config: GlowConfig,
    /// `(shape, values)` of each latent, in [`Glow::encode`]'s order.
    pub latents: Vec<(Vec<usize>, Vec<f32>)>,
    /// Each image's class.
    pub labels: Vec<usize>,
    /// Each image's index in its split.
    pub indices: Vec<u64>,
    /// How the pixels were dequantised: `midpoint` or `noise:SEED`.
    pub dequantization: String,
    /// Which weights of the checkpoint encoded them: `raw` or `ema` (empty: not said).
    pub weights: String,
    /// The coupling networks' product precision when they were encoded: `f32` or `bf16`
    /// (empty: not said).
    pub matmul_precision: String,
    /// Where they came from, for people.
    pub source: String,
}

impl Latents {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends the latents `z` of a batch (as [`Glow::encode`] gives them) with their
    /// labels and indices.
    pub fn push(&mut self, z: &[Tensor], labels: &[usize], indices: &[u64]) -> Result<()> {
        if self.latents.is_empty() {
            self.latents = z.iter().map(|t| (t.shape().to_vec(), Vec::new())).collect();
            for (shape, _) in &mut self.latents {
                shape[0] = 0;
            }
        }
        if z.len() != self.latents.len() || labels.len() != indices.len() {
            return Err(Error::invalid(
                "latents",
                format!(
                    "a batch of {} latents, {} labels and {} indices after {} latents",
                    z.len(),
                    labels.len(),
                    indices.len(),
                    self.latents.len()
                ),
            ));
        }
        for ((shape, values), t) in self.latents.iter_mut().zip(z) {
            if t.shape()[1..] != shape[1..] || t.shape()[0] != labels.len() {
                return Err(Error::shape(
                    "latents",
                    format!("a latent of shape {:?} after {shape:?}", t.shape()),
                ));
            }
            shape[0] += t.shape()[0];
            values.extend(t.to_vec()?);
        }
        self.labels.extend_from_slice(labels);
        self.indices.extend_from_slice(indices);
        Ok(())
    }

    /// The latents of images `first..first + count` as tensors on `model`'s device,
    /// checked against the shapes `model` decodes.
    pub fn batch(&self, model: &Glow, first: usize, count: usize) -> Result<Vec<Tensor>> {
        let n = self.len();
        if first + count > n {
            return Err(Error::invalid(
                "latents",
                format!("images {first}..{} of {n}", first + count),
            ));
        }
        let want = model.latent_shapes(n);
        let have: Vec<Vec<usize>> = self.latents.iter().map(|l| l.0.clone()).collect();
        if want != have {
            return Err(Error::shape(
                "latents",
                format!("the model decodes latents of shapes {want:?}, the file holds {have:?}"),
            ));
        }
        self.latents
            .iter()
            .map(|(shape, values)| {
                let per: usize = shape[1..].iter().product();
                let mut s = shape.clone();
                s[0] = count;
                Tensor::from_slice(
                    &values[first * per..(first + count) * per],
                    &s,
                    model.device(),
                )
            })
            .collect()
    }
}

/// Writes `latents` to `path` (atomically).
pub fn save_latents(path: impl AsRef<Path>, latents: &Latents) -> Result<()> {
    let path = path.as_ref();
    let n = latents.len();
    let labels: Vec<f32> = latents.labels.iter().map(|&l| l as f32).collect();
    let indices: Vec<f32> = latents.indices.iter().map(|&i| i as f32).collect();
    let shape = [n];
    let mut tensors: Vec<(String, F32View)> = latents
        .latents
        .iter()
        .enumerate()
        .map(|(k, (shape, data))| (format!("latent.{k}"), F32View { shape, data }))
        .collect();
    tensors.push((
        "labels".into(),
        F32View {
            shape: &shape,
            data: &labels,
        },
    ));
    tensors.push((
        "indices".into(),
        F32View {
            shape: &shape,
            data: &indices,
        },
    ));
    let config = serde_json::to_string(&latents.config)
        .map_err(|e| io_error(path, "the model configuration", e))?;
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("glow.config", config),
        ("dequantization", latents.dequantization.clone()),
        ("weights", latents.weights.clone()),
        ("matmul_precision", latents.matmul_precision.clone()),
        ("source", latents.source.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    write_atomic(path, |tmp| {
        safetensors::tensor::serialize_to_file(tensors, Some(meta), tmp)
            .map_err(|e| io_error(path, "writing the latents", e))
    })
}

/// Reads a latent file written by [`save_latents`], failing with a message naming the
/// file on anything else (not safetensors, another format, a missing or misshapen
/// tensor, a label or index that is not a whole number).
pub fn load_latents(path: impl AsRef<Path>) -> Result<Latents> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "cannot read the latents", e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| io_error(path, "not a safetensors file, or truncated", e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| io_error(path, "unreadable safetensors header", e))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let bad = |msg: String| Error::io(path, msg);
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a latent file: its format is {:?}, expected {FORMAT:?} (examples/encode.rs writes them)",
            meta.get("format")
        )));
    }
    if meta.get("format_version") != Some(&FORMAT_VERSION.to_string()) {
        return Err(bad(format!(
            "latent format version {:?}; this build reads {FORMAT_VERSION}",
            meta.get("format_version")
        )));
    }
    let config: GlowConfig = serde_json::from_str(meta.get("glow.config").map_or("", |s| s))
        .map_err(|e| io_error(path, "bad glow.config", e))?;
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = file
            .tensor(name)
            .map_err(|_| bad(format!("missing tensor {name}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, not F32", t.dtype())));
        }
        Ok((t.shape().to_vec(), f32s(t.data())))
    };
    let whole = |name: &str, values: Vec<f32>| -> Result<Vec<u64>> {
        values
            .into_iter()
            .map(|v| {
                (v >= 0.0 && v.fract() == 0.0 && v < 16_777_216.0)
                    .then_some(v as u64)
                    .ok_or_else(|| bad(format!("{name} holds {v}, not a whole number")))
            })
            .collect()
    };
    let (label_shape, labels) = read("labels")?;
    let (_, indices) = read("indices")?;
    let n = label_shape.first().copied().unwrap_or(0);
    let levels = (0..)
        .take_while(|k| file.names().contains(&format!("latent.{k}").as_str()))
        .count();
    let latents = (0..levels)
        .map(|k| read(&format!("latent.{k}")))
        .collect::<Result<Vec<_>>>()?;
    if latents.is_empty()
        || latents.iter().any(|(s, _)| s.first() != Some(&n))
        || indices.len() != n
    {
        return Err(bad(format!(
            "the latents, labels and indices do not describe the same {n} images"
        )));
    }
    Ok(Latents {
        config,
        latents,
        labels: whole("labels", labels)?
            .into_iter()
            .map(|l| l as usize)
            .collect(),
        indices: whole("indices", indices)?,
        dequantization: meta.get("dequantization").cloned().unwrap_or_default(),
        weights: meta.get("weights").cloned().unwrap_or_default(),
        matmul_precision: meta.get("matmul_precision").cloned().unwrap_or_default(),
        source: meta.get("source").cloned().unwrap_or_default(),
    })
}

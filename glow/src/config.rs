//! The hyper-parameters that define a Glow model.

use engine::{Error, Result};
use serde::{Deserialize, Serialize};

/// The coupling layer of each flow step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coupling {
    /// `yb = (xb + shift) · sigmoid(raw + 2)`: learns a scale, so it has a log-det.
    Affine,
    /// `yb = xb + NN(xa)`: volume preserving, log-det 0.
    Additive,
}

/// How each flow step mixes channels before its coupling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permutation {
    /// Learned invertible 1x1 convolution with a full weight matrix.
    Invconv,
    /// Learned invertible 1x1 convolution in LU-decomposed form.
    InvconvLu,
    /// A fixed random channel shuffle (the paper's ablation baseline).
    Shuffle,
    /// Fixed channel reversal (RealNVP's choice, the paper's other baseline).
    Reverse,
}

/// How a training step keeps what its backward pass needs (see `engine::invertible`).
/// It changes memory and time, not the function: both give the same gradients up to
/// `f32` reconstruction error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Memory {
    /// Ordinary reverse mode: every flow step's activations are kept until backward.
    /// Memory grows linearly with depth `K`; the fastest step.
    #[default]
    Stored,
    /// Each level (squeeze and its `K` steps) is one reversible op: its backward rebuilds
    /// every step's input from the step's output by the inverse and reruns the step.
    /// Activation memory does not grow with `K`; costs one extra forward per step.
    Reversible,
}

impl Memory {
    fn is_stored(&self) -> bool {
        *self == Memory::Stored
    }
}

/// Everything that fixes a Glow model's architecture and initialisation.
/// Serialised as JSON in checkpoints (see `docs/checkpoint-format.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlowConfig {
    /// Input `[channels, height, width]`; height and width divisible by `2^levels`.
    pub image_shape: [usize; 3],
    /// Number of levels `L` (squeeze, `K` steps, split).
    pub levels: usize,
    /// Flow steps per level `K`.
    pub depth: usize,
    /// Channels inside each coupling network.
    pub hidden: usize,
    /// Affine or additive coupling.
    pub coupling: Coupling,
    /// Channel mixing of each step.
    pub permutation: Permutation,
    /// Learn the top prior's mean and log-scale (else a standard normal).
    pub learn_top: bool,
    /// Condition the priors on a class label and learn a classifier on the top latent.
    pub y_condition: bool,
    /// Number of classes for `y_condition`.
    pub num_classes: usize,
    /// Weight of the classification loss (in bits) added to bits/dim.
    pub y_weight: f32,
    /// Bits per colour channel kept from the 8-bit input.
    pub n_bits: u32,
    /// Seed of the random initialisation (1x1 convolutions, coupling weights, shuffles).
    pub seed: u64,
    /// Stored or reversible backward. Not part of the model's function: written to a
    /// checkpoint only when reversible, and read as [`Memory::Stored`] when absent, so
    /// checkpoints of stored-mode models are unchanged and old ones still load.
    #[serde(default, skip_serializing_if = "Memory::is_stored")]
    pub memory: Memory,
}

impl Default for GlowConfig {
    /// The paper's CIFAR-10 model: L = 3, K = 32, hidden 512, affine coupling, 1x1
    /// convolution (LU form here, as the common PyTorch port trains it), learned top prior.
    fn default() -> Self {
        GlowConfig {
            image_shape: [3, 32, 32],
            levels: 3,
            depth: 32,
            hidden: 512,
            coupling: Coupling::Affine,
            permutation: Permutation::InvconvLu,
            learn_top: true,
            y_condition: false,
            num_classes: 10,
            y_weight: 0.01,
            n_bits: 8,
            seed: 0,
            memory: Memory::default(),
        }
    }
}

impl GlowConfig {
    /// Checks that the configuration describes a buildable model.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.image_shape;
        let bad = |msg: String| Err(Error::invalid("GlowConfig", msg));
        if self.levels == 0 || self.depth == 0 || self.hidden == 0 || c == 0 {
            return bad(format!(
                "levels, depth, hidden and channels must be positive (got L={}, K={}, hidden={}, C={c})",
                self.levels, self.depth, self.hidden
            ));
        }
        // `levels as u32` would wrap 2^32 + 1 levels to 1 and let them pass.
        let factor = u32::try_from(self.levels)
            .ok()
            .and_then(|l| 1usize.checked_shl(l))
            .unwrap_or(0);
        if factor == 0 || h % factor != 0 || w % factor != 0 || h < factor || w < factor {
            return bad(format!(
                "height {h} and width {w} must be positive multiples of 2^levels = 2^{}",
                self.levels
            ));
        }
        if !(1..=8).contains(&self.n_bits) {
            return bad(format!("n_bits must be in 1..=8, got {}", self.n_bits));
        }
        if self.y_condition && self.num_classes == 0 {
            return bad("y_condition needs num_classes > 0".into());
        }
        Ok(())
    }

    /// `D = C·H·W`, the number of dimensions of one image.
    pub fn dims(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// `2^n_bits`, the number of values each input dimension can take.
    pub fn n_bins(&self) -> f32 {
        (1u32 << self.n_bits) as f32
    }
}

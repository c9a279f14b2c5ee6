//! Glow (Kingma & Dhariwal 2018) on the `engine` crate: a multi-scale normalizing flow
//! with invertible 1x1 convolutions.
//!
//! Start with [`Glow`] (`model.rs`), built from a [`GlowConfig`]. The layers are in
//! `layers/`, each an invertible [`layers::Flow`] with its log-determinant; the priors'
//! Gaussian in `gaussian.rs`; named parameters and the model state in `param.rs`. The
//! mathematics of every layer, the objective and sampling are explained in
//! `docs/model.md` at the repository root, with the item computing each part; the names
//! follow the common PyTorch port so weights can be exchanged.
//!
//! The data: `data.rs` holds images of any shape ([`data::Dataset`]) in the splits a run
//! trains from ([`data::ImageSplits`]) and loads CIFAR-10 (by default the 3,000-image
//! sample shipped in `data/cifar10-sample/`, see [`data::default_data_dir`]); `data/`
//! loads the other datasets, each in its official format (MNIST, CIFAR-100, SVHN,
//! downsampled ImageNet, a folder of pictures); `download.rs` fetches those whose files
//! are public; `augment.rs` shifts and mirrors training batches; `preprocess.rs` turns
//! pixels into the flow's input ([`Dequantization`]); `device.rs` chooses the device to
//! compute on. Checkpoints (one safetensors file: model, optimiser, training position)
//! are in `checkpoint.rs`, described for other frameworks in
//! `docs/checkpoint-format.md`; PNG sample grids, loss curves and histograms in
//! `picture.rs`; files of latents in `latents.rs`; TensorBoard event files in
//! `tensorboard.rs`; out-of-distribution scores in `ood.rs`.
//!
//! Training: one step and evaluation in `train.rs`; a whole run (the loop, periodic
//! evaluation, checkpoints on their own schedule and the best one, sample grids, the
//! metrics log, resume, stopping on a signal, and skipping and rolling back non-finite
//! steps) in `run/`, which `examples/train_cifar10.rs` drives. Data-parallel training
//! across processes (each its shard of every batch, gradients averaged by one all-reduce
//! per step; MPI with the `mpi` feature, or threads of one process) is in `parallel.rs`.

pub mod atomic;
pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod download;
pub mod explore;
pub mod font;
pub mod gaussian;
pub mod latents;
pub mod layers;
pub mod model;
pub mod ood;
pub mod optim;
pub mod parallel;
pub mod param;
pub mod picture;
pub mod preprocess;
pub mod run;
pub mod tensorboard;
pub mod train;

pub use config::{Coupling, GlowConfig, Memory, Permutation};
pub use engine;
pub use model::{FlowOutput, Glow, Loss};
pub use param::{ModelState, Param, StateTensor};
pub use preprocess::Dequantization;

//! Train Glow on any dataset the loaders read: `train_cifar10`'s program
//! (`examples/train_cifar10.rs`, where its flags and outputs are described) under a name
//! that does not say CIFAR-10. `--dataset` picks the loader and `--data` its files;
//! the model takes the images' shape, and the run folder defaults to `runs/DATASET`.
//!
//! ```sh
//! cargo run --release --example train -- --dataset mnist --data data/mnist
//! cargo run --release --example train -- --dataset cifar100 --data data/cifar-100-binary
//! ```

#[path = "train_cifar10.rs"]
mod program;

fn main() {
    program::main();
}

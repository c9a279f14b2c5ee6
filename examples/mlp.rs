//! The engine at micrograd's size: a two-layer MLP learns which points of the square
//! `[-1, 1]²` lie inside a circle, by plain gradient descent on the logistic loss.
//!
//! ```sh
//! cargo run --release --example mlp              # on the CPU device
//! cargo run --release --example mlp -- reference # the same on the reference device
//! cargo run --release --example mlp -- tiny      # the same lines on the tour's stop 0
//! ```
//!
//! It prints the loss as it falls and ends with a JSON line, like the other examples.
//! Everything here is the public `engine` API: tensors, ops, `backward()`, `no_grad`.
//! The network and its training loop (`examples/mlp/body.rs`) are written once and
//! compiled twice: against `engine`, and against `glow_rs::tiny`, the tour's stop 0.

/// The MLP on the engine.
pub mod on_engine {
    use engine::{no_grad, Device, Result, Tensor};
    include!("mlp/body.rs");
}

/// The same lines on the tour's stop 0, `glow_rs::tiny`: one short file with the same
/// design and no devices.
pub mod on_tiny {
    use glow_rs::tiny::{no_grad, Device, Result, Tensor};
    include!("mlp/body.rs");
}

pub use on_engine::run;

#[allow(dead_code)] // tests/examples.rs includes this file for `run` alone
fn main() -> Result<(), String> {
    let (first, last, acc, dev) = match std::env::args().nth(1).as_deref() {
        None | Some("cpu") => on_engine_run(engine::Device::Cpu)?,
        Some("reference") => on_engine_run(engine::Device::Reference)?,
        Some("tiny") => {
            let (first, last, acc) = on_tiny::run(&glow_rs::tiny::Device::Host)?;
            (first, last, acc, "tiny (stop 0)".to_string())
        }
        Some(other) => {
            eprintln!("error: the device must be `cpu`, `reference` or `tiny`, got {other}");
            std::process::exit(2);
        }
    };
    println!("{{\"first_loss\":{first:.4},\"loss\":{last:.4},\"test_accuracy\":{acc:.3},\"device\":\"{dev}\"}}");
    Ok(())
}

/// [`on_engine::run`] on `dev`, with the device's name.
#[allow(dead_code)]
fn on_engine_run(dev: engine::Device) -> Result<(f32, f32, f32, String), String> {
    let (first, last, acc) = on_engine::run(&dev).map_err(|e| e.to_string())?;
    Ok((first, last, acc, dev.name()))
}

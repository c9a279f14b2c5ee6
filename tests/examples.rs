//! The small teaching example, run as a test: `examples/mlp.rs` must really learn, on
//! the engine and on the tour's stop 0 (`glow_rs::tiny`).
//!
//! The example file is included as a module, so the test drives the same `run` that
//! `cargo run --example mlp` does.

#[path = "../examples/mlp.rs"]
mod mlp;

use engine::Device;

/// The circle is learnable by 16 tanh units: the loss must fall to well under half its
/// starting value and fresh points must be classified far above the 62% that always
/// answering "outside" gets.
fn learns(dev: &Device) {
    let (first_loss, loss, test_accuracy) = mlp::run(dev).unwrap();
    assert!(loss < 0.4 * first_loss, "loss {loss} from {first_loss}");
    assert!(test_accuracy > 0.9, "test accuracy {test_accuracy}");
}

#[test]
fn the_mlp_example_learns_the_circle_on_the_cpu() {
    learns(&Device::Cpu);
}

#[test]
fn the_mlp_example_learns_the_circle_on_the_reference_device() {
    learns(&Device::Reference);
}

#[test]
fn the_same_lines_learn_the_circle_on_the_tiny_engine_of_stop_0() {
    let (first_loss, loss, test_accuracy) =
        mlp::on_tiny::run(&glow_rs::tiny::Device::Host).unwrap();
    assert!(loss < 0.4 * first_loss, "loss {loss} from {first_loss}");
    assert!(test_accuracy > 0.9, "test accuracy {test_accuracy}");
}

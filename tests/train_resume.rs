//! A training run interrupted by a checkpoint and resumed gives the same losses as an
//! uninterrupted run with the same seed (CPU device, bit for bit).

use engine::{Device, Result};
use glow::checkpoint::{resume, save_checkpoint, TrainState};
use glow::data::Cifar10;
use glow::optim::OptimizerConfig;
use glow::train::{batch_for_step, Trainer};
use glow::{Glow, GlowConfig};

fn config() -> GlowConfig {
    GlowConfig {
        levels: 3,
        depth: 1,
        hidden: 16,
        learn_top: true,
        ..GlowConfig::default()
    }
}

fn trainer(dev: &Device) -> Result<Trainer> {
    let opt = OptimizerConfig {
        lr: 1e-3,
        warmup: 3,
        max_grad_norm: Some(50.0),
        ..Default::default()
    };
    Ok(Trainer::new(Glow::new(config(), dev)?, opt, 7))
}

fn run(t: &mut Trainer, data: &Cifar10, steps: u64) -> Result<Vec<f32>> {
    let mut losses = Vec::new();
    while t.step < steps {
        let (pixels, labels) = batch_for_step(&data.train, 4, t.seed, t.step)?;
        losses.push(t.step(&pixels, &labels)?.loss);
    }
    Ok(losses)
}

#[test]
fn interrupted_and_resumed_matches_uninterrupted() -> Result<()> {
    let dev = Device::Cpu;
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let straight = run(&mut trainer(&dev)?, &data, 6)?;

    let mut first = trainer(&dev)?;
    let mut resumed_losses = run(&mut first, &data, 3)?;
    let dir = std::env::temp_dir().join(format!("glow-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let state = TrainState {
        seed: first.seed,
        step: first.step,
        ..TrainState::default()
    };
    save_checkpoint(&path, &first.model, &first.optimizer, &state)?;
    drop(first);

    let (model, optimizer, state) = resume(&path, &dev)?;
    let mut second = Trainer {
        model,
        optimizer,
        seed: state.seed,
        step: state.step,
    };
    resumed_losses.extend(run(&mut second, &data, 6)?);
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(straight.len(), 6);
    assert_eq!(straight, resumed_losses, "losses must agree bit for bit");
    // Guard: the run really trains (losses change step to step).
    assert!(straight.windows(2).all(|w| w[0] != w[1]));
    Ok(())
}

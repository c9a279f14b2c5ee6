//! Data-parallel training (`glow::parallel`) against one process, without MPI: the ranks
//! are threads of this test, joined by `glow::parallel::InProcess`, which sums in shared
//! memory (what `train_cifar10 --shards` runs). Two ranks with shards of 8 must give the losses of one trainer with
//! the whole batch of 16, and end with the same weights on both ranks. The same
//! `Trainer` code runs under MPI (`tests/mpi.rs`, feature `mpi`).

use std::sync::Arc;

use engine::{Device, Result};
use glow::data::Cifar10;
use glow::optim::OptimizerConfig;
use glow::parallel::{shard, Collective, InProcess};
use glow::train::{batch_for_step, Trainer};
use glow::{Glow, GlowConfig, Memory, ModelState};

/// A small model's trainer in `memory` mode.
fn trainer(memory: Memory) -> Result<Trainer> {
    let cfg = GlowConfig {
        levels: 2,
        depth: 2,
        hidden: 16,
        learn_top: true,
        memory,
        ..GlowConfig::default()
    };
    let opt = OptimizerConfig {
        lr: 2e-3,
        warmup: 5,
        max_grad_norm: Some(50.0),
        ..Default::default()
    };
    Ok(Trainer::new(Glow::new(cfg, &Device::Cpu)?, opt, 11))
}

/// `steps` steps on the global batches of `batch` images; returns the losses and the
/// final state.
fn train(
    mut t: Trainer,
    data: &Cifar10,
    batch: usize,
    steps: u64,
) -> Result<(Vec<f32>, ModelState)> {
    let mut losses = Vec::new();
    for step in 0..steps {
        let (pixels, labels) = batch_for_step(&data.train, batch, t.seed, step)?;
        losses.push(t.step(&pixels, &labels)?.loss);
    }
    Ok((losses, t.model.state()?))
}

fn two_ranks_match_one_process(memory: Memory) -> Result<()> {
    let data = Arc::new(Cifar10::load(glow::data::default_data_dir())?);
    let (single, single_state) = train(trainer(memory)?, &data, 16, 20)?;
    let start = {
        let t = trainer(memory)?;
        let (pixels, labels) = batch_for_step(&data.train, 16, t.seed, 0)?;
        t.initialize(&pixels, &labels)?;
        t.model.state()?
    };
    let handles: Vec<_> = InProcess::world(2)
        .into_iter()
        .map(|comm| {
            let data = data.clone();
            std::thread::spawn(move || -> Result<(Vec<f32>, ModelState)> {
                let t = trainer(memory)?.with_collective(Arc::new(comm));
                train(t, &data, 16, 20)
            })
        })
        .collect();
    let ranks: Vec<(Vec<f32>, ModelState)> = handles
        .into_iter()
        .map(|h| h.join().expect("a rank panicked"))
        .collect::<Result<_>>()?;
    for (step, (a, b)) in single.iter().zip(&ranks[0].0).enumerate() {
        // The ranks sum each shard's mean and halve it where one process takes the mean
        // of 16: the same value up to rounding, which Adam's updates carry along.
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{memory:?} step {}: one process {a}, two ranks {b}",
            step + 1
        );
    }
    assert_eq!(
        ranks[0].0, ranks[1].0,
        "both ranks report the same averaged losses"
    );
    assert_eq!(
        ranks[0].1, ranks[1].1,
        "both ranks hold bitwise the same weights"
    );
    assert!(
        single[19] < single[0] - 0.5,
        "training moves: {} to {}",
        single[0],
        single[19]
    );
    // And the weights are those of one process, up to rounding, compared over the whole
    // model with how far training moved them: ‖a − b‖ against ‖a − start‖. Not to a
    // fixed 1e-5: the ActNorms initialise 1e-6 to 2e-5 apart (relative; channel means
    // near zero), and Adam divides each gradient by its own running scale, so a
    // gradient component near zero turns a rounding difference into a step of up to
    // the learning rate. Measured: 4.3e-4 of the distance moved (7.6e-4 apart, 2.5e-5
    // of the weights' norm), in both memory modes.
    let sq_dist = |x: &[f32], y: &[f32]| -> f64 {
        x.iter().zip(y).map(|(p, q)| f64::from(p - q).powi(2)).sum()
    };
    let (mut diff, mut moved) = (0.0f64, 0.0f64);
    for ((a, b), s0) in single_state
        .tensors
        .iter()
        .zip(&ranks[0].1.tensors)
        .zip(&start.tensors)
    {
        assert_eq!((&a.name, &a.name), (&b.name, &s0.name));
        diff += sq_dist(&a.data, &b.data);
        moved += sq_dist(&a.data, &s0.data);
    }
    let rel = (diff / moved).sqrt();
    eprintln!("{memory:?}: two ranks vs one process after 20 steps: weights {:e} apart, {rel:e} of the distance moved", diff.sqrt());
    assert!(
        rel <= 1e-2,
        "{memory:?}: the weights differ by {rel:e} of the distance moved"
    );
    Ok(())
}

#[test]
fn two_ranks_of_8_give_the_losses_of_one_process_of_16() -> Result<()> {
    two_ranks_match_one_process(Memory::Stored)
}

#[test]
fn two_reversible_ranks_of_8_give_the_losses_of_one_process_of_16() -> Result<()> {
    two_ranks_match_one_process(Memory::Reversible)
}

#[test]
fn a_batch_that_does_not_split_evenly_is_refused() {
    assert_eq!(shard(16, 1, 2).unwrap(), (8, 8));
    let err = shard(15, 0, 2).unwrap_err().to_string();
    assert!(err.contains("multiple of the number of ranks"), "{err}");
}

#[test]
fn ranks_with_other_weights_are_named() -> Result<()> {
    // Rank 1 builds its model from another seed: the check must fail on both ranks and
    // name rank 1; with the same seed it passes.
    for (seed1, diverged) in [(11u64, false), (12, true)] {
        let handles: Vec<_> = InProcess::world(2)
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || -> Result<std::result::Result<(), String>> {
                    let seed = if comm.rank() == 1 { seed1 } else { 11 };
                    let cfg = GlowConfig {
                        levels: 2,
                        depth: 1,
                        hidden: 8,
                        seed,
                        ..GlowConfig::default()
                    };
                    let model = Glow::new(cfg, &Device::Cpu)?;
                    Ok(glow::parallel::check_replicas(&comm, &model).map_err(|e| e.to_string()))
                })
            })
            .collect();
        for h in handles {
            let outcome = h.join().expect("a rank panicked")?;
            match (diverged, outcome) {
                (false, Ok(())) => {}
                (true, Err(e)) => assert!(e.contains("rank 1 holds other weights"), "{e}"),
                (d, o) => panic!("diverged {d}: {o:?}"),
            }
        }
    }
    Ok(())
}

/// Two ranks that hold the same values: the sum doubles them.
struct Twin;

impl Collective for Twin {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn sum_in_place(&self, values: &mut [f32]) -> Result<()> {
        values.iter_mut().for_each(|v| *v *= 2.0);
        Ok(())
    }
}

glow_rs::device_test!(fn averaging_equal_gradients_leaves_them_as_they_were(dev) {
    // The averaging's gather into one buffer and its scatter back (concat, read-back,
    // upload, slices) on every device: with both ranks equal, every gradient must come
    // back unchanged, shape included, and a parameter without one must get none.
    let cfg = GlowConfig { image_shape: [3, 8, 8], levels: 2, depth: 1, hidden: 4, learn_top: true, ..GlowConfig::default() };
    let model = Glow::new(cfg.clone(), dev)?;
    let x = glow_rs::testing::glow_images(&cfg, 2, 3, dev)?;
    let (loss, _) = model.loss(&x, None)?;
    let mut grads = loss.backward()?;
    let params = model.trainable_params();
    let before: Vec<Option<Vec<f32>>> = params.iter().map(|p| grads.get(&p.get()).map(|g| g.to_vec()).transpose()).collect::<Result<_>>()?;
    let extra = glow::parallel::average_gradients(&Twin, &params, &mut grads, &[1.5, -2.0])?;
    assert_eq!(extra, vec![1.5, -2.0]);
    for (p, was) in params.iter().zip(before) {
        match (was, grads.get(&p.get())) {
            (Some(was), Some(g)) => {
                assert_eq!(g.shape(), p.get().shape(), "{}", p.name());
                assert_eq!(g.to_vec()?, was, "{}", p.name());
            }
            (None, None) => {}
            (was, now) => panic!("{}: a gradient before {}, after {}", p.name(), was.is_some(), now.is_some()),
        }
    }
    Ok(())
});

/// A class-conditional model's class loss and accuracy, averaged over two ranks of 8,
/// are one process's of 16: the ranks' shards are equal, so the mean of their accuracies
/// is the batch's. Three steps, so the classifier has moved off its zero start.
#[test]
fn two_ranks_report_the_class_loss_and_accuracy_of_one_process() -> Result<()> {
    let data = Arc::new(Cifar10::load(glow::data::default_data_dir())?);
    let conditional = || -> Result<Trainer> {
        let t = trainer(Memory::Stored)?;
        let cfg = GlowConfig {
            y_condition: true,
            y_weight: 1.0,
            ..t.model.config().clone()
        };
        Ok(Trainer::new(
            Glow::new(cfg, &Device::Cpu)?,
            t.optimizer.config,
            t.seed,
        ))
    };
    let run = |mut t: Trainer| -> Result<Vec<glow::train::ClassStats>> {
        (0..3u64)
            .map(|step| {
                let (pixels, labels) = batch_for_step(&data.train, 16, t.seed, step)?;
                Ok(t.step(&pixels, &labels)?.class.expect("class stats"))
            })
            .collect()
    };
    let single = run(conditional()?)?;
    let ranks: Vec<Vec<glow::train::ClassStats>> = std::thread::scope(|s| {
        let joins: Vec<_> = InProcess::world(2)
            .into_iter()
            .map(|comm| {
                let t = conditional().map(|t| t.with_collective(Arc::new(comm)));
                s.spawn(|| run(t?))
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().expect("a rank panicked"))
            .collect::<Result<_>>()
    })?;
    assert_eq!(ranks[0], ranks[1], "both ranks report the same figures");
    for (a, b) in single.iter().zip(&ranks[0]) {
        assert!((a.loss_bits - b.loss_bits).abs() < 1e-4, "{a:?} vs {b:?}");
        assert!((a.accuracy - b.accuracy).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    Ok(())
}

/// A rank that fails tells the others through `Collective::fail`: their next sum fails
/// at once, saying so, instead of waiting for it for ever.
#[test]
fn a_failed_in_process_rank_breaks_the_others_wait() {
    let mut world = InProcess::world(2);
    let (one, zero) = (world.pop().unwrap(), world.pop().unwrap());
    let waiting = std::thread::spawn(move || {
        let mut v = [1.0f32];
        zero.sum_in_place(&mut v)
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(one.fail(), "an in-process rank can tell the others");
    let err = waiting.join().expect("no panic").unwrap_err();
    assert!(InProcess::is_another_ranks_failure(&err), "{err}");
    // And a sum that has both ranks completes, rank order fixed.
    let world = InProcess::world(2);
    let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
        let joins: Vec<_> = world
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let mut v = vec![c.rank() as f32 + 1.0, 0.5];
                    c.sum_in_place(&mut v).map(|()| v)
                })
            })
            .collect();
        joins
            .into_iter()
            .map(|j| j.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(sums, [vec![3.0, 1.0], vec![3.0, 1.0]]);
}

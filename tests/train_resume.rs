//! The training run of `glow::run`, in process on the CPU device: a run stopped part-way
//! and resumed gives the same losses as an uninterrupted one, bit for bit, and a NaN in
//! the parameters is skipped, logged and rolled back, after which training goes on.
//! `tests/train_interrupt.rs` does the same to the example's process with real signals.

use std::path::Path;

use engine::{Device, Result};
use glow::augment::{Augmentation, Transform};
use glow::data::Cifar10;
use glow::optim::OptimizerConfig;
use glow::run::{CheckpointReason, Event, Interrupt, Run, RunConfig, RunSummary, SIGINT};
use glow::train::Trainer;
use glow::{Glow, GlowConfig};
use glow_rs::testing::Scratch;
use serde_json::Value;

fn trainer() -> Result<Trainer> {
    let cfg = GlowConfig {
        levels: 3,
        depth: 1,
        hidden: 16,
        learn_top: true,
        ..GlowConfig::default()
    };
    // Both clips and a moving average, so that a resume is shown to repeat them too.
    let opt = OptimizerConfig {
        lr: 1e-3,
        warmup: 3,
        max_grad_norm: Some(50.0),
        max_grad_value: Some(0.5),
        ema_decay: Some(0.9),
        ..Default::default()
    };
    Ok(Trainer::new(Glow::new(cfg, &Device::Cpu)?, opt, 7))
}

/// `steps` steps of batches of 4 into `out`, checkpoints only where the run must write
/// them (start, end, stop, rollback), the batches shifted and flipped (so that a resume
/// is shown to repeat the augmentation too).
fn config(out: &Path, steps: u64) -> RunConfig {
    RunConfig {
        batch: 4,
        augmentation: Augmentation {
            transforms: vec![Transform::port_translate(32), Transform::HFlip],
        },
        eval_every: 0,
        sample_every: 0,
        checkpoint_every: 0,
        checkpoint_interval: None,
        ..RunConfig::new(out, steps)
    }
}

/// Runs `run`, returning its summary and every event. `stop_at`: request a stop (as
/// SIGINT would) once this step is done.
fn drive(
    run: &mut Run,
    data: &dyn glow::data::ImageSplits,
    stop_at: Option<u64>,
) -> Result<(RunSummary, Vec<Event>)> {
    let interrupt = Interrupt::new();
    let mut events = Vec::new();
    let summary = run.run(data, &interrupt, |e| {
        if let Event::Step { stats, .. } = e {
            if Some(stats.step) == stop_at {
                interrupt.request(SIGINT);
            }
        }
        events.push(e.clone());
    })?;
    Ok((summary, events))
}

/// The losses of the events' good steps, in order.
fn losses(events: &[Event]) -> Vec<f32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step { stats, .. } => Some(stats.loss),
            _ => None,
        })
        .collect()
}

/// Every line of a run's metrics log.
fn log(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join(glow::run::METRICS_FILE)).expect("read the log");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

/// `(step, loss)` of the log's good steps, in order.
fn logged_losses(out: &Path) -> Vec<(u64, f32)> {
    glow_rs::testing::step_losses(&log(out))
}

#[test]
fn interrupted_and_resumed_matches_uninterrupted() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let (a, b) = (
        Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-straight"),
        Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-stopped"),
    );

    // Uninterrupted, evaluating every 3 steps and drawing samples at the end.
    let straight_config = RunConfig {
        eval_every: 3,
        eval_batch: 100,
        sample_every: 6,
        sample_images: 4,
        ..config(&a, 6)
    };
    let mut straight = Run::new(straight_config, trainer()?)?;
    let (done, events) = drive(&mut straight, &data, None)?;
    let want = losses(&events);
    assert_eq!(want.len(), 6);
    assert!(
        want.windows(2).all(|w| w[0] != w[1]),
        "the run really trains"
    );
    assert_eq!(
        (done.step, done.checkpoint_step, done.interrupted),
        (6, 6, None)
    );
    let evals = events
        .iter()
        .filter(|e| matches!(e, Event::Evaluated { .. }))
        .count();
    assert_eq!(evals, 2, "evaluations at steps 3 and 6");
    for file in [
        "best.safetensors",
        "loss_curve.png",
        "samples/step000006_all.png",
    ] {
        assert!(a.join(file).is_file(), "{file} written");
    }
    glow::checkpoint::load_checkpoint(a.join("best.safetensors"))?;

    // Stopped after step 3 (evaluation off: 0 means never), then resumed in a new Run.
    let mut first = Run::new(config(&b, 6), trainer()?)?;
    let (stopped, events) = drive(&mut first, &data, Some(3))?;
    assert_eq!(stopped.interrupted, Some(SIGINT));
    assert_eq!((stopped.step, stopped.checkpoint_step), (3, 3));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Checkpoint {
            step: 3,
            reason: CheckpointReason::Interrupted,
            ..
        }
    )));
    let mut got = losses(&events);
    drop(first);
    assert!(
        !b.join("best.safetensors").exists(),
        "no evaluation, no best"
    );

    // What a crash after the checkpoint leaves: lines of steps that will run again, and a
    // line cut short. The resume must drop both.
    let log_path = b.join(glow::run::METRICS_FILE);
    let mut text = std::fs::read_to_string(&log_path).expect("read");
    text.push_str("{\"step\":4,\"loss\":1.0,\"bpd\":1.0}\n{\"step\":5,\"lo");
    std::fs::write(&log_path, text).expect("write");

    let mut second = Run::resume(config(&b, 6), &Device::Cpu)?;
    assert_eq!(second.trainer.step, 3);
    let (done, events) = drive(&mut second, &data, None)?;
    assert_eq!((done.step, done.interrupted), (6, None));
    got.extend(losses(&events));
    assert_eq!(got, want, "losses must agree bit for bit");
    // So do the weights and their moving average.
    let end = |dir: &Path| glow::checkpoint::load_checkpoint(dir.join(glow::run::CHECKPOINT_FILE));
    let (end_a, end_b) = (end(&a)?, end(&b)?);
    assert!(
        !end_a.optimizer.averages.is_empty(),
        "the run keeps an average"
    );
    assert_eq!(end_a.optimizer.averages, end_b.optimizer.averages);
    assert_eq!(end_a.model_state, end_b.model_state);
    assert_ne!(
        end_a.optimizer.averages.values().next().map(|t| &t.data),
        end_a
            .model_state
            .get(end_a.optimizer.averages.keys().next().unwrap())
            .ok()
            .map(|t| &t.data),
        "the average is not the weights"
    );
    // Both test bits/dim were logged at each evaluation.
    let evaluations: Vec<Value> = log(&a)
        .into_iter()
        .filter(|v| v.get("test_bpd").is_some())
        .collect();
    assert_eq!(evaluations.len(), 2);
    for v in &evaluations {
        assert!(
            v["test_bpd_ema"].as_f64().is_some_and(f64::is_finite),
            "{v}"
        );
    }

    // The log holds each step once, with the uninterrupted run's losses.
    let steps: Vec<(u64, f32)> = (1..=6).zip(want.iter().copied()).collect();
    assert_eq!(logged_losses(&b), steps);
    assert_eq!(logged_losses(&a), steps);
    Ok(())
}

#[test]
fn a_nan_is_skipped_logged_and_rolled_back() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-nan");
    let config = RunConfig {
        max_bad_steps: 3,
        ..config(&dir, 4)
    };
    let mut run = Run::new(config, trainer()?)?;
    drive(&mut run, &data, None)?;
    let lr = run.trainer.optimizer.config.lr;

    // Poison one parameter after the checkpoint of step 4: every loss is now NaN.
    let victim = "flow.layers.1.actnorm.bias";
    let p = run
        .trainer
        .model
        .params()
        .into_iter()
        .find(|p| p.name() == victim)
        .expect("the parameter");
    let mut values = p.get().to_vec()?;
    values[0] = f32::NAN;
    p.set(&engine::Tensor::from_vec(values, &p.shape(), &Device::Cpu)?)?;

    // Settings changed since the checkpoint (as a resume may change them) survive the
    // rollback: only the learning rate is the rollback's own.
    run.trainer.optimizer.config.max_grad_value = Some(0.25);
    run.trainer.optimizer.config.ema_decay = None;

    run.config.steps = 8;
    let (done, events) = drive(&mut run, &data, None)?;
    let o = &run.trainer.optimizer;
    assert_eq!(
        (o.config.max_grad_value, o.config.ema_decay),
        (Some(0.25), None)
    );
    assert!(o.averages.is_empty(), "an average turned off stays off");
    let skipped: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Skipped { skipped, .. } => Some(skipped.step),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, [5, 6, 7], "three NaN steps, then the rollback");
    let rollback = events
        .iter()
        .find(|e| matches!(e, Event::RolledBack { .. }))
        .expect("a rollback");
    assert_eq!(
        *rollback,
        Event::RolledBack {
            from_step: 7,
            to_step: 4,
            lr: lr * 0.5
        }
    );
    let after: Vec<(u64, f32, f32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step { stats, .. } => Some((stats.step, stats.loss, stats.lr)),
            _ => None,
        })
        .collect();
    assert_eq!(after.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 6, 7, 8]);
    assert!(
        after.iter().all(|s| s.1.is_finite() && s.2 == lr * 0.5),
        "{after:?}"
    );
    assert_eq!((done.step, done.skipped_steps, done.rollbacks), (8, 3, 1));

    // All of it is in the log, with why.
    let lines = log(&dir);
    let skipped_lines: Vec<&Value> = lines.iter().filter(|v| v["skipped"] == true).collect();
    assert_eq!(skipped_lines.len(), 3);
    for v in &skipped_lines {
        assert!(v["reason"].as_str().unwrap().contains("loss is NaN"), "{v}");
    }
    let rollback_line = lines
        .iter()
        .find(|v| v["rollback"] == true)
        .expect("logged");
    assert_eq!(rollback_line["from_step"], 7);
    assert_eq!(rollback_line["step"], 4);
    assert_eq!(rollback_line["lr"].as_f64().unwrap() as f32, lr * 0.5);

    // The lowered learning rate is in the checkpoint, so it survives a resume.
    drop(run);
    let resumed = Run::resume(RunConfig::new(dir.to_path_buf(), 8), &Device::Cpu)?;
    assert_eq!(resumed.trainer.optimizer.config.lr, lr * 0.5);
    assert_eq!(resumed.trainer.step, 8);
    Ok(())
}

/// A setting changed on resume (a new learning rate, as `--lr` on the command line)
/// reaches the checkpoint even when the run is stopped before its first step: the
/// resume command the example prints leaves `--lr` out, so the checkpoint must hold it.
#[test]
fn a_setting_changed_on_resume_is_checkpointed_by_a_stop_before_any_step() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-new-lr");
    let mut first = Run::new(config(&dir, 2), trainer()?)?;
    drive(&mut first, &data, None)?;
    drop(first);

    let mut resumed = Run::resume(config(&dir, 4), &Device::Cpu)?;
    assert_eq!(resumed.trainer.optimizer.config.lr, 1e-3);
    resumed.trainer.optimizer.config.lr = 5e-4;
    let interrupt = Interrupt::new();
    interrupt.request(SIGINT);
    let summary = resumed.run(&data, &interrupt, |_| {})?;
    assert_eq!((summary.step, summary.interrupted), (2, Some(SIGINT)));
    drop(resumed);
    let header = glow::checkpoint::read_header(dir.join(glow::run::CHECKPOINT_FILE))?;
    assert_eq!((header.train.step, header.optimizer.lr), (2, 5e-4));
    Ok(())
}

#[test]
fn a_run_that_keeps_diverging_gives_up_after_max_rollbacks() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-diverging");
    // A learning rate no model survives: each first step throws the parameters so far
    // that the next losses are not finite, however often it is halved.
    let mut t = trainer()?;
    t.optimizer.config.lr = 1e30;
    t.optimizer.config.max_grad_norm = None;
    let config = RunConfig {
        max_bad_steps: 2,
        max_rollbacks: 3,
        ..config(&dir, 50)
    };
    let mut run = Run::new(config, t)?;
    let interrupt = Interrupt::new();
    let mut rollbacks = Vec::new();
    let err = run
        .run(&data, &interrupt, |e| {
            if let Event::RolledBack { to_step, lr, .. } = e {
                rollbacks.push((*to_step, *lr));
            }
        })
        .expect_err("it must give up");
    assert_eq!(rollbacks, [(0, 5e29), (0, 2.5e29), (0, 1.25e29)]);
    let msg = err.to_string();
    assert!(
        msg.contains("gave up") && msg.contains("checkpoint.safetensors"),
        "{msg}"
    );
    // What is left on disk is the last good state, ready for a resume.
    let ckpt = glow::checkpoint::load_checkpoint(dir.join("checkpoint.safetensors"))?;
    assert_eq!((ckpt.train.step, ckpt.optimizer.config.lr), (0, 1.25e29));
    Ok(())
}

#[test]
fn a_finite_loss_with_an_overflowing_gradient_norm_skips_the_update() -> Result<()> {
    // The top prior's log-scale at -30 makes its density's gradient about e^60 · z ≈ 1e25
    // per element: every gradient and the loss (about 1e24 bits/dim) stay finite, but
    // the sum of the gradients' squares overflows, so the global norm is infinite.
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let mut t = trainer()?;
    let (pixels, labels) = glow::train::batch_for_step(&data.train, 4, t.seed, 0)?;
    t.initialize(&pixels, &labels)?;
    let bias = t
        .model
        .params()
        .into_iter()
        .find(|p| p.name() == "learn_top_fn.conv.bias")
        .expect("the top prior's bias");
    let mut values = bias.get().to_vec()?;
    let half = values.len() / 2;
    values[half..].iter_mut().for_each(|v| *v = -30.0); // the log-scale half
    bias.set(&engine::Tensor::from_vec(
        values,
        &bias.shape(),
        &Device::Cpu,
    )?)?;
    let before = t.model.state()?;
    match t.try_step(&pixels, &labels)? {
        glow::train::StepOutcome::Skipped(s) => match s.why {
            glow::train::SkipReason::GradNorm(n) => assert!(n.is_infinite(), "{n}"),
            other => panic!("skipped for {other}, not the gradient norm"),
        },
        glow::train::StepOutcome::Updated(stats) => panic!("updated: {stats:?}"),
    }
    assert_eq!(t.step, 1, "the batch is used up");
    assert_eq!(t.model.state()?, before, "nothing was updated");
    Ok(())
}

/// Grey 16x8 images, 40 for training and 8 for testing, of 2 classes: data that is not
/// CIFAR-10, through the run's dataset abstraction.
struct Stripes {
    train: glow::data::Dataset,
    test: glow::data::Dataset,
}

impl Stripes {
    fn new() -> Stripes {
        let shape = [1, 16, 8];
        let split = |n: usize, offset: usize| {
            let images = (0..n * 128)
                .map(|i| ((i * 37 + offset) % 256) as u8)
                .collect();
            let labels = (0..n).map(|i| (i % 2) as u16).collect();
            glow::data::Dataset::new(shape, images, labels).unwrap()
        };
        Stripes {
            train: split(40, 0),
            test: split(8, 11),
        }
    }
}

impl glow::data::ImageSplits for Stripes {
    fn train(&self) -> &glow::data::Dataset {
        &self.train
    }
    fn test(&self) -> &glow::data::Dataset {
        &self.test
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn describe(&self) -> String {
        "stripes: 40 train and 8 test images of 1x16x8".into()
    }
}

#[test]
fn a_run_trains_on_images_of_any_shape_and_refuses_the_wrong_one() -> Result<()> {
    let data = Stripes::new();
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-stripes");
    let cfg = GlowConfig {
        image_shape: [1, 16, 8],
        levels: 2,
        depth: 1,
        hidden: 8,
        learn_top: true,
        num_classes: 2,
        ..GlowConfig::default()
    };
    let grey = Trainer::new(Glow::new(cfg, &Device::Cpu)?, OptimizerConfig::default(), 3);
    let run_config = RunConfig {
        augmentation: Augmentation {
            transforms: vec![Transform::Translate { max: 2 }, Transform::HFlip],
        },
        eval_every: 3,
        ..config(&dir, 6)
    };
    let mut run = Run::new(run_config, grey)?;
    let (summary, _) = drive(&mut run, &data, None)?;
    assert_eq!(summary.step, 6);
    assert!(summary.test_bpd.is_some_and(f64::is_finite), "{summary:?}");
    drop(run);

    // A CIFAR-10 model on these images is refused, naming both shapes.
    let other = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-stripes-wrong");
    let mut wrong = Run::new(config(&other, 2), trainer()?)?;
    let err = drive(&mut wrong, &data, None).unwrap_err().to_string();
    assert!(
        err.contains("[3, 32, 32]") && err.contains("[1, 16, 8]"),
        "{err}"
    );
    Ok(())
}

/// The same tensors, whatever their order (a checkpoint sorts them by name).
fn same_state(a: &glow::param::ModelState, b: &glow::param::ModelState) -> bool {
    let sorted = |s: &glow::param::ModelState| {
        let mut t: Vec<(String, Vec<u32>)> = s
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    sorted(a) == sorted(b)
}

/// `init_batch` initialises the ActNorms before the first step from the first images of
/// the first epoch's order, the same state as `Trainer::initialize` on those images, and
/// the first checkpoint holds it; without it they come from the first training batch.
#[test]
fn the_actnorms_initialise_from_init_batch_images() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let after_init = |init_batch: Option<usize>, name: &str| -> Result<glow::param::ModelState> {
        let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), name);
        let run_config = RunConfig {
            init_batch,
            ..config(&dir, 0)
        };
        let mut run = Run::new(run_config, trainer()?)?;
        drive(&mut run, &data, None)?;
        let saved = glow::checkpoint::load_checkpoint(dir.join(glow::run::CHECKPOINT_FILE))?;
        let state = run.trainer.model.state()?;
        assert!(
            same_state(&saved.model_state, &state),
            "the first checkpoint holds the state after initialisation"
        );
        Ok(state)
    };
    let by_run = after_init(Some(64), "run-init-64")?;
    let manual = trainer()?;
    let (pixels, labels) = glow::train::batch_for_step(&data.train, 64, manual.seed, 0)?;
    manual.initialize(&pixels, &labels)?;
    assert!(manual.model.is_initialized());
    assert!(
        same_state(&by_run, &manual.model.state()?),
        "the 64 images' statistics"
    );
    // Without it, nothing is initialised before the first step.
    let untouched = after_init(None, "run-init-none")?;
    assert!(
        same_state(&untouched, &trainer()?.model.state()?),
        "not initialised"
    );
    assert!(!same_state(&by_run, &untouched));

    // More images than the training split is an error naming both.
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-init-too-many");
    let run_config = RunConfig {
        init_batch: Some(5000),
        ..config(&dir, 1)
    };
    let mut run = Run::new(run_config, trainer()?)?;
    let err = drive(&mut run, &data, None).unwrap_err().to_string();
    assert!(err.contains("5000") && err.contains("2700"), "{err}");
    Ok(())
}

#[test]
fn a_class_conditional_run_logs_its_class_loss_and_accuracy() -> Result<()> {
    let data = Cifar10::load(glow::data::default_data_dir())?;
    let dir = Scratch::new(env!("CARGO_TARGET_TMPDIR"), "run-classes");
    let cfg = GlowConfig {
        levels: 2,
        depth: 1,
        hidden: 8,
        y_condition: true,
        ..GlowConfig::default()
    };
    let t = Trainer::new(Glow::new(cfg, &Device::Cpu)?, OptimizerConfig::default(), 2);
    let mut run = Run::new(config(&dir, 2), t)?;
    drive(&mut run, &data, None)?;
    let steps: Vec<Value> = log(&dir)
        .into_iter()
        .filter(|v| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for v in &steps {
        let (bits, accuracy) = (v["class_loss_bits"].as_f64(), v["class_accuracy"].as_f64());
        assert!(bits.is_some_and(|b| b > 0.0), "{v}");
        assert!(accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)), "{v}");
    }
    Ok(())
}

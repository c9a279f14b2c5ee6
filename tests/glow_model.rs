//! End-to-end checks of the Glow model: invertibility, log-determinants against a
//! brute-force Jacobian, gradients against finite differences, parameter counts, the
//! state round trip, and every device against the reference device (log p, every
//! parameter's gradient, decode). The `device_test!` tests run on all three devices.

use engine::anomaly;
use engine::gradcheck::GradCheck;
use engine::linalg::Lu;
use engine::{no_grad, Device, Result, Tensor};
use glow::layers::Flow;
use glow::Glow;
use glow::{Coupling, GlowConfig, Permutation};
use glow_rs::device_test;

/// A small model on `[3, 8, 8]` images.
fn small(coupling: Coupling, permutation: Permutation) -> GlowConfig {
    GlowConfig {
        hidden: 16,
        ..small_glow(coupling, permutation)
    }
}

use glow_rs::testing::{glow_images as images, small_glow, train_adamax as train};

use glow_rs::testing::{flat_latents, max_abs_diff, perturb};

const ALL_KINDS: [(Coupling, Permutation); 5] = [
    (Coupling::Affine, Permutation::Invconv),
    (Coupling::Affine, Permutation::InvconvLu),
    (Coupling::Additive, Permutation::InvconvLu),
    (Coupling::Affine, Permutation::Shuffle),
    (Coupling::Additive, Permutation::Reverse),
];

device_test!(fn whole_models_invert_at_init_and_after_training(dev) {
    for (coupling, permutation) in ALL_KINDS {
        let cfg = small(coupling, permutation);
        let model = Glow::new(cfg.clone(), dev)?;
        let x = images(&cfg, 4, 1, dev)?;
        let err = max_abs_diff(&model.decode(&model.encode(&x, None)?)?, &x)?;
        assert!(err < 1e-4, "{coupling:?}/{permutation:?} at init: {err}");
        train(&model, &x, 5, 1e-2)?;
        let x2 = images(&cfg, 4, 2, dev)?;
        let err = max_abs_diff(&model.decode(&model.encode(&x2, None)?)?, &x2)?;
        assert!(err < 1e-4, "{coupling:?}/{permutation:?} after training: {err}");
    }
    Ok(())
});

device_test!(fn training_moves_the_weights_off_identity(dev) {
    // Guards the test above: after 5 steps the couplings are no longer the identity.
    let cfg = small(Coupling::Affine, Permutation::InvconvLu);
    let model = Glow::new(cfg.clone(), dev)?;
    let x = images(&cfg, 4, 1, dev)?;
    train(&model, &x, 5, 1e-2)?;
    let zero_conv = model.params().into_iter().find(|p| p.name() == "flow.layers.1.block.4.conv.weight").unwrap();
    let w = zero_conv.get().to_vec()?;
    assert!(w.iter().map(|v| v.abs()).fold(0.0, f32::max) > 1e-3);
    Ok(())
});

device_test!(fn every_layer_inverts(dev) {
    use glow::layers::{actnorm::ActNorm, coupling::CouplingLayer, permute::{FixedPermutation, InvConv}, squeeze};
    let x = Tensor::rand_uniform(&[2, 8, 4, 4], -1.0, 1.0, 3, dev)?;
    let zero = Tensor::zeros(&[2], dev)?;
    let actnorm = ActNorm::new("a", 8, dev)?;
    let layers: Vec<(&str, Box<dyn Flow>)> = vec![
        ("invconv", Box::new(InvConv::new("i", 8, false, 1, dev)?)),
        ("invconv-lu", Box::new(InvConv::new("l", 8, true, 2, dev)?)),
        ("shuffle", Box::new(FixedPermutation::shuffle("s", 8, 3, dev)?)),
        ("reverse", Box::new(FixedPermutation::reverse("r", 8, dev)?)),
        ("affine", Box::new(CouplingLayer::new("c", Coupling::Affine, 8, 16, 4, dev)?)),
        ("additive", Box::new(CouplingLayer::new("d", Coupling::Additive, 8, 16, 5, dev)?)),
    ];
    let (y, _) = actnorm.forward(&x, &zero)?; // initialises from x
    assert!(max_abs_diff(&actnorm.inverse(&y)?, &x)? < 1e-5, "actnorm");
    for (name, layer) in &layers {
        let mut params = Vec::new();
        layer.visit_params(&mut |p| params.push(p));
        // Random weights everywhere (the couplings' output convs start at zero).
        for (i, p) in params.iter().filter(|p| p.trainable()).enumerate() {
            let v = p.get();
            p.set(&v.add(&Tensor::randn(v.shape(), 0.0, 0.1, 100 + i as u64, dev)?)?)?;
        }
        let (y, _) = layer.forward(&x, &zero)?;
        assert!(max_abs_diff(&y, &x)? > 1e-3, "{name} should change its input");
        let err = max_abs_diff(&layer.inverse(&y)?, &x)?;
        assert!(err < 1e-4, "{name}: {err}");
    }
    let sq = squeeze::squeeze(&x)?;
    assert_eq!(sq.shape(), &[2, 32, 2, 2]);
    assert_eq!(squeeze::unsqueeze(&sq)?.to_vec()?, x.to_vec()?);
    Ok(())
});

device_test!(fn logdet_matches_the_brute_force_jacobian(dev) {
    for (coupling, permutation) in [(Coupling::Affine, Permutation::Invconv), (Coupling::Affine, Permutation::InvconvLu), (Coupling::Additive, Permutation::Shuffle)] {
        let cfg = GlowConfig { image_shape: [3, 4, 4], levels: 2, depth: 2, hidden: 8, coupling, permutation, ..GlowConfig::default() };
        let model = Glow::new(cfg.clone(), dev)?;
        // ActNorm's data init on a batch of 64: one image would give the 1x1 top level
        // a zero variance and scales of 1e6. Perturbations of 0.03 make every layer
        // data-dependent while keeping the Jacobian well conditioned: its log-determinant,
        // built from 48 f32 backward passes, amplifies their rounding by the condition
        // number (with 0.1 the Vulkan device's rounding moved it by 2e-3).
        no_grad(|| model.forward(&images(&cfg, 64, 4, dev)?, None))?;
        perturb(&model, 0.03, 50)?;
        let x = images(&cfg, 1, 5, dev)?.with_grad();
        let out = model.forward(&x, None)?;
        let logdet = f64::from(out.logdet.item()?);
        // Row i of the 48x48 Jacobian is the gradient of latent i.
        let z = flat_latents(&model, &x)?;
        let d = z.numel();
        assert_eq!(d, 48);
        let mut jac = Vec::with_capacity(d * d);
        for i in 0..d {
            let g = z.slice(0, i, 1)?.sum_all()?.backward()?;
            jac.extend(g.get(&x).unwrap().to_vec()?.into_iter().map(f64::from));
        }
        let brute = Lu::new(&jac, d)?.log_abs_det();
        assert!((brute - logdet).abs() < 1e-3, "{coupling:?}/{permutation:?}: brute force {brute}, model {logdet}");
        // Guard: the map is far from volume-preserving, so the check has teeth.
        if coupling == Coupling::Affine {
            assert!(logdet.abs() > 0.1, "logdet {logdet}");
        }
    }
    Ok(())
});

#[test]
fn gradients_of_the_full_loss_match_finite_differences_on_cpu() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = GlowConfig {
        image_shape: [3, 4, 4],
        levels: 2,
        depth: 1,
        hidden: 8,
        y_condition: true,
        num_classes: 3,
        y_weight: 0.5,
        ..GlowConfig::default()
    };
    let model = Glow::new(cfg.clone(), &dev)?;
    let x = images(&cfg, 2, 9, &dev)?;
    let labels = [0usize, 2];
    let init_labels: Vec<usize> = (0..16).map(|i| i % 3).collect();
    no_grad(|| model.forward(&images(&cfg, 16, 8, &dev)?, Some(&init_labels)))?;
    perturb(&model, 0.02, 60)?;
    // The loss in nats summed over the batch keeps gradients O(1) for the f32 check.
    let d = cfg.dims() as f32;
    let nats = |x: &Tensor| -> Result<Tensor> {
        let (loss, _) = model.loss(x, Some(&labels))?;
        loss.scale(d * std::f32::consts::LN_2 * 2.0)
    };
    // The loss is ~500 nats, so each f32 evaluation is rounded by ~3e-5 nats, ~3e-2 in a
    // central difference with eps = 1e-3: hence atol = 0.1. A larger eps would cross the
    // ReLU kinks of the coupling networks. Gradients here are O(1) to O(50), and a wrong
    // backward rule misses by a large fraction of them.
    let (eps, atol, rtol) = (1e-3f32, 0.1, 2e-2);
    // With respect to the input image:
    let report = GradCheck {
        max_elements: 24,
        eps,
        atol,
        rtol,
        ..GradCheck::default()
    }
    .run(|t| nats(&t[0]), std::slice::from_ref(&x))?;
    assert!(report.passed(), "input: {report}");
    // With respect to every parameter (a few elements each): analytic from one backward,
    // numeric by perturbing the parameter's values.
    let grads = nats(&x)?.backward()?;
    let mut checked = 0;
    for p in model.trainable_params() {
        let value = p.get();
        let analytic = grads
            .get(&value)
            .map(|g| g.to_vec())
            .transpose()?
            .unwrap_or_else(|| vec![0.0; value.numel()]);
        let base = value.to_vec()?;
        for j in (0..base.len()).step_by(base.len().div_ceil(3)) {
            let eval = |delta: f32| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                p.set(&Tensor::from_vec(v, value.shape(), &dev)?)?;
                let r = no_grad(|| nats(&x))?.item()?;
                Ok(f64::from(r))
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * f64::from(eps));
            p.set(&Tensor::from_slice(&base, value.shape(), &dev)?)?;
            let a = f64::from(analytic[j]);
            assert!(
                (a - numeric).abs() <= atol + rtol * a.abs().max(numeric.abs()),
                "{} [{j}]: analytic {a}, numeric {numeric}",
                p.name()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
    Ok(())
}

#[test]
fn parameter_counts_match_the_pytorch_port() -> Result<()> {
    // The common PyTorch port stores the LU factors as full C x C matrices (masked), like
    // we do, so the counts agree exactly.
    let dev = Device::Cpu;
    let paper = Glow::new(GlowConfig::default(), &dev)?;
    assert_eq!(paper.num_parameters(), 44_235_312);
    let small = Glow::new(
        GlowConfig {
            depth: 8,
            hidden: 128,
            ..GlowConfig::default()
        },
        &dev,
    )?;
    assert_eq!(small.num_parameters(), 1_704_912);
    Ok(())
}

#[test]
fn state_round_trip_keeps_log_p_bit_identical_on_cpu() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = small(Coupling::Affine, Permutation::InvconvLu);
    let model = Glow::new(cfg.clone(), &dev)?;
    let x = images(&cfg, 4, 11, &dev)?;
    train(&model, &x, 3, 1e-2)?;
    let state = model.state()?;
    // A model with another seed, loaded from the state, computes the same function.
    let other = Glow::new(GlowConfig { seed: 99, ..cfg }, &dev)?;
    other.load_state(&state)?;
    assert!(other.is_initialized());
    let probe = images(&other.config().clone(), 4, 12, &dev)?;
    let a = no_grad(|| model.log_prob(&probe, None))?.to_vec()?;
    let b = no_grad(|| other.log_prob(&probe, None))?.to_vec()?;
    assert_eq!(a, b);
    // The loaded ActNorms do not re-initialise on new data.
    let before = other.state()?;
    no_grad(|| other.forward(&images(other.config(), 4, 13, &dev)?, None))?;
    assert_eq!(other.state()?, before);
    Ok(())
}

device_test!(fn sampling_is_seeded_and_temperature_zero_is_the_mean(dev) {
    let cfg = small(Coupling::Affine, Permutation::InvconvLu);
    let model = Glow::new(cfg.clone(), dev)?;
    train(&model, &images(&cfg, 4, 1, dev)?, 2, 1e-2)?;
    let a = model.sample(3, 0.7, None, 5)?;
    assert_eq!(a.shape(), &[3, 3, 8, 8]);
    assert_eq!(a.to_vec()?, model.sample(3, 0.7, None, 5)?.to_vec()?);
    assert_ne!(a.to_vec()?, model.sample(3, 0.7, None, 6)?.to_vec()?);
    // At T = 0 every image is the decoded prior mean, whatever the seed.
    let m1 = model.sample(2, 0.0, None, 1)?.to_vec()?;
    let m2 = model.sample(2, 0.0, None, 2)?.to_vec()?;
    assert_eq!(m1, m2);
    Ok(())
});

device_test!(fn misuse_is_an_error(dev) {
    let cfg = small(Coupling::Affine, Permutation::InvconvLu);
    assert!(Glow::new(GlowConfig { image_shape: [3, 6, 6], ..cfg.clone() }, dev).is_err());
    assert!(Glow::new(GlowConfig { n_bits: 9, ..cfg.clone() }, dev).is_err());
    let model = Glow::new(cfg.clone(), dev)?;
    let err = model.forward(&Tensor::zeros(&[1, 3, 4, 4], dev)?, None).unwrap_err();
    assert!(err.to_string().contains("[3, 8, 8]"), "{err}");
    let err = model.decode(&[Tensor::zeros(&[1, 3], dev)?]).unwrap_err();
    assert!(err.to_string().contains("decode"), "{err}");
    let cond = Glow::new(GlowConfig { y_condition: true, ..cfg }, dev)?;
    assert!(cond.forward(&images(cond.config(), 2, 1, dev)?, None).is_err());
    assert!(cond.forward(&images(cond.config(), 2, 1, dev)?, Some(&[0])).is_err());
    Ok(())
});

device_test!(fn interpolation_ends_at_the_inputs_and_directions_are_class_differences(dev) {
    use glow::explore::{attribute_direction, interpolate, manipulate};
    let cfg = small(Coupling::Affine, Permutation::InvconvLu);
    let model = Glow::new(cfg.clone(), dev)?;
    let data = images(&cfg, 6, 21, dev)?;
    train(&model, &data, 2, 1e-2)?;
    let (a, b) = (data.slice(0, 0, 1)?, data.slice(0, 1, 1)?);
    let strip = interpolate(&model, &a, &b, None, 5)?;
    assert_eq!(strip.shape(), &[5, 3, 8, 8]);
    assert!(max_abs_diff(&strip.slice(0, 0, 1)?, &a)? < 1e-4);
    assert!(max_abs_diff(&strip.slice(0, 4, 1)?, &b)? < 1e-4);
    // Direction between two groups; α = 0 reproduces the image, α = 1 applied to the mean
    // of `without` moves its latents exactly by the difference of means.
    let dir = attribute_direction(&model, &data.slice(0, 0, 3)?, &data.slice(0, 3, 3)?, None)?;
    let out = manipulate(&model, &a, None, &dir, &[0.0, 1.0])?;
    assert!(max_abs_diff(&out.slice(0, 0, 1)?, &a)? < 1e-4);
    let moved = model.encode(&out.slice(0, 1, 1)?, None)?;
    let base = model.encode(&a, None)?;
    for ((m, z), d) in moved.iter().zip(&base).zip(&dir) {
        assert!(max_abs_diff(&m.sub(z)?, d)? < 1e-3);
    }
    Ok(())
});

/// The model on `dev` against the same model on the reference device (the oracle: plain
/// `f64` loops, `engine/src/reference/`): log p(x), the gradient of every parameter and
/// decode, for both couplings, two permutations and class conditioning.
fn agrees_with_the_reference(dev: &Device) -> Result<()> {
    let reference = Device::Reference;
    for (coupling, permutation) in [
        (Coupling::Affine, Permutation::InvconvLu),
        (Coupling::Additive, Permutation::Invconv),
    ] {
        let cfg = GlowConfig {
            y_condition: true,
            num_classes: 4,
            ..small(coupling, permutation)
        };
        let (m_ref, m_dev) = (
            Glow::new(cfg.clone(), &reference)?,
            Glow::new(cfg.clone(), dev)?,
        );
        let labels = [0usize, 3, 1, 2];
        let x_ref = images(&cfg, 4, 31, &reference)?;
        let x_dev = x_ref.to_device(dev)?;
        no_grad(|| m_ref.forward(&x_ref, Some(&labels)))?;
        no_grad(|| m_dev.forward(&x_dev, Some(&labels)))?;
        // Move both to the same generic point: the reference model's perturbed state.
        perturb(&m_ref, 0.02, 70)?;
        m_dev.load_state(&m_ref.state()?)?;
        let rel = glow_rs::testing::normalised_error;
        let (lp_ref, lp_dev) = (
            m_ref.log_prob(&x_ref, Some(&labels))?,
            m_dev.log_prob(&x_dev, Some(&labels))?,
        );
        let e = rel(&lp_dev.to_vec()?, &lp_ref.to_vec()?);
        assert!(
            e < 1e-5,
            "{coupling:?}/{permutation:?} log p on {dev}: normalised error {e:e}"
        );
        let (loss_ref, _) = m_ref.loss(&x_ref, Some(&labels))?;
        let (loss_dev, _) = m_dev.loss(&x_dev, Some(&labels))?;
        let (g_ref, g_dev) = (loss_ref.backward()?, loss_dev.backward()?);
        for (p_ref, p_dev) in m_ref
            .trainable_params()
            .iter()
            .zip(m_dev.trainable_params())
        {
            let a = g_ref.get(&p_ref.get()).map(|g| g.to_vec()).transpose()?;
            let b = g_dev.get(&p_dev.get()).map(|g| g.to_vec()).transpose()?;
            let (Some(a), Some(b)) = (a, b) else {
                panic!("{}: gradient on one device only", p_ref.name());
            };
            // The device sums over the batch and pixels in f32, in its own order; the
            // reference in f64. 1e-4 of the gradient's norm allows for f32 sums of this size.
            let e = rel(&b, &a);
            assert!(
                e < 1e-4,
                "{} gradient on {dev}: normalised error {e:e}",
                p_ref.name()
            );
        }
        let z = m_ref.encode(&x_ref, Some(&labels))?;
        let z_dev: Vec<Tensor> = z.iter().map(|t| t.to_device(dev)).collect::<Result<_>>()?;
        let e = rel(
            &m_dev.decode(&z_dev)?.to_vec()?,
            &m_ref.decode(&z)?.to_vec()?,
        );
        assert!(e < 1e-5, "decode on {dev}: normalised error {e:e}");
    }
    Ok(())
}

#[test]
fn cpu_agrees_with_the_reference_on_log_p_gradients_and_decode() -> Result<()> {
    agrees_with_the_reference(&Device::Cpu)
}

/// A device that has written only the core primitives runs Glow: the CPU device with
/// every fused op composed from its core (`engine::backend::fused::CoreOnly`).
#[test]
fn a_core_only_device_agrees_with_the_reference_on_log_p_gradients_and_decode() -> Result<()> {
    agrees_with_the_reference(&Device::CoreCpu)
}

#[cfg(feature = "vulkan")]
#[test]
fn vulkan_agrees_with_the_reference_on_log_p_gradients_and_decode() -> Result<()> {
    let Some(vk) = glow_rs::testing::vulkan_device() else {
        return Ok(());
    };
    agrees_with_the_reference(&vk)?;
    glow_rs::testing::assert_no_validation_messages();
    Ok(())
}

// Anomaly mode (`engine::anomaly`) on the model: an overflowing parameter is named by
// its layer.
device_test!(fn glow_names_the_layer_whose_parameter_overflows(dev) {
    let cfg = GlowConfig {
        image_shape: [3, 8, 8],
        levels: 2,
        depth: 1,
        hidden: 8,
        ..GlowConfig::default()
    };
    let model = Glow::new(cfg, dev)?;
    let x = Tensor::rand_uniform(&[2, 3, 8, 8], -0.5, 0.5, 1, dev)?;
    no_grad(|| model.forward(&x, None))?; // the ActNorms initialise from this batch
    // flow.layers.4 is the second level's step (0 and 3 are the squeezes, 1 the first
    // level's step and 2 its split; see glow/src/model.rs). The zero convolution that
    // ends its coupling network scales by e^(3·logs): logs = 100 overflows.
    let logs = model
        .params()
        .into_iter()
        .find(|p| p.name() == "flow.layers.4.block.4.logs")
        .expect("the parameter exists");
    logs.set(&Tensor::full(&logs.shape(), 100.0, dev)?)?;

    // Off: the loss is NaN (the zero weights times ∞), with no hint where from.
    let (loss, _) = model.loss(&x, None)?;
    assert!(loss.item()?.is_nan());

    let _on = anomaly::detect_anomaly(true);
    let err = model.loss(&x, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("non-finite output of exp (forward) in flow.layers.4: input [24, 1, 1]"),
        "{msg}"
    );
    Ok(())
});

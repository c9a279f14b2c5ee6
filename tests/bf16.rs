//! Glow stays exact when its coupling networks multiply in bf16 (`engine::precision`):
//! the networks only give the shifts and scales of affine maps, so the flow still inverts
//! to f32 rounding and its log-determinant still equals the brute-force Jacobian's. The
//! same checks as `tests/glow_model.rs`, with the process set to bf16, on the CPU device;
//! and a guard that bf16 really changed the model's numbers where the CPU has it.
//!
//! Everything is in one test: the precision is a process-wide setting, and the other
//! tests of this binary must not see it.

use engine::linalg::Lu;
use engine::precision::{self, MatmulPrecision};
use engine::{no_grad, Device, Result};
use glow::{Coupling, Glow, GlowConfig, Permutation};
use glow_rs::testing::{
    flat_latents, glow_images as images, max_abs_diff, perturb, small_glow, train_adamax as train,
};

#[test]
fn glow_inverts_and_its_logdet_is_exact_with_bf16_products() -> Result<()> {
    let dev = Device::Cpu;
    let effective = precision::set_matmul_precision(MatmulPrecision::Bf16);
    if effective != MatmulPrecision::Bf16 {
        eprintln!("note: this CPU has no avx512bf16: the checks run in f32 here");
    }

    // decode(encode(x)) = x, at initialisation and after training, as in f32.
    for (coupling, permutation) in [
        (Coupling::Affine, Permutation::InvconvLu),
        (Coupling::Additive, Permutation::Invconv),
    ] {
        // 64 channels: the networks' passes into them are wide enough for the bf16
        // kernels (engine's cpu/bf16.rs runs those with 64 or more rows).
        let cfg = GlowConfig {
            hidden: 64,
            ..small_glow(coupling, permutation)
        };
        let model = Glow::new(cfg.clone(), &dev)?;
        let x = images(&cfg, 4, 1, &dev)?;
        train(&model, &x, 5, 1e-2)?;
        let x2 = images(&cfg, 4, 2, &dev)?;
        let err = max_abs_diff(&model.decode(&model.encode(&x2, None)?)?, &x2)?;
        assert!(
            err < 1e-4,
            "{coupling:?}/{permutation:?} after training: {err}"
        );

        // The guard: bf16 products change the latents where the CPU has them.
        let z_bf16 = flat_latents(&model, &x2)?.to_vec()?;
        precision::set_matmul_precision(MatmulPrecision::F32);
        let z_f32 = flat_latents(&model, &x2)?.to_vec()?;
        precision::set_matmul_precision(MatmulPrecision::Bf16);
        assert_eq!(
            z_bf16 != z_f32,
            effective == MatmulPrecision::Bf16,
            "{coupling:?}: bf16 changed the numbers exactly where the CPU has it"
        );
    }

    // The log-determinant against the brute-force Jacobian (as in tests/glow_model.rs).
    let cfg = GlowConfig {
        image_shape: [3, 4, 4],
        levels: 2,
        depth: 2,
        hidden: 64,
        coupling: Coupling::Affine,
        permutation: Permutation::InvconvLu,
        ..GlowConfig::default()
    };
    let model = Glow::new(cfg.clone(), &dev)?;
    no_grad(|| model.forward(&images(&cfg, 64, 4, &dev)?, None))?;
    perturb(&model, 0.03, 50)?;
    let x = images(&cfg, 1, 5, &dev)?.with_grad();
    let logdet = f64::from(model.forward(&x, None)?.logdet.item()?);
    let z = flat_latents(&model, &x)?;
    // The map is the bf16 forward pass's; its Jacobian's rows are taken with f32
    // derivatives. (A bf16 backward pass would round each row's cotangent anew, so every
    // row would see a slightly different linear map, and no determinant of their stack
    // need be the map's: measured 1e-3 off here.)
    precision::set_matmul_precision(MatmulPrecision::F32);
    let d = z.numel();
    let mut jac = Vec::with_capacity(d * d);
    for i in 0..d {
        let g = z.slice(0, i, 1)?.sum_all()?.backward()?;
        jac.extend(g.get(&x).unwrap().to_vec()?.into_iter().map(f64::from));
    }
    // The networks' outputs only reach each coupling's off-diagonal block of the
    // Jacobian, which no determinant sees: the same 1e-3 as in f32.
    let brute = Lu::new(&jac, d)?.log_abs_det();
    assert!(
        (brute - logdet).abs() < 1e-3,
        "brute force {brute}, model {logdet}"
    );
    assert!(logdet.abs() > 0.1, "the check has teeth: logdet {logdet}");
    precision::set_matmul_precision(MatmulPrecision::F32);
    Ok(())
}

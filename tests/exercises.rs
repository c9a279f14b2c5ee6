//! The exercises of `src/exercises.rs`, checked. Each test of an answer is ignored until
//! you attempt it: `cargo test --test exercises -- --ignored NAME`. The tests that are
//! not ignored check the checks: each must refuse a wrong answer, so that a passing
//! attempt means something.

use engine::Tensor;
use glow_rs::exercises::*;

#[test]
#[ignore = "exercise 1: write glow_rs::exercises::softsign_vjp, then run it with --ignored"]
fn softsign() {
    check_softsign_vjp(softsign_vjp).unwrap();
}

#[test]
#[ignore = "exercise 2: write glow_rs::exercises::detached_square, then run it with --ignored"]
fn detach() {
    check_detached_square(detached_square).unwrap();
}

#[test]
#[ignore = "exercise 3: write glow_rs::exercises::tiny_sigmoid, then run it with --ignored"]
fn sigmoid() {
    check_tiny_sigmoid(tiny_sigmoid).unwrap();
}

#[test]
#[ignore = "exercise 4: write glow_rs::exercises::coupling_logdet, then run it with --ignored"]
fn coupling() {
    check_coupling_logdet(coupling_logdet).unwrap();
}

#[test]
#[ignore = "exercise 5: write glow_rs::exercises::bits_per_dim, then run it with --ignored"]
fn bits() {
    check_bits_per_dim(bits_per_dim).unwrap();
}

#[test]
fn each_check_refuses_a_wrong_answer() {
    // The usual slips: a missing square, |x| without the absolute value, the honest
    // gradient or a wrong value, the wrong derivative, log s of a negative s or s itself,
    // the bins forgotten, nats for bits.
    assert!(check_softsign_vjp(|x, dy| Ok(x
        .iter()
        .zip(dy)
        .map(|(&x, &g)| g / (1.0 + x.abs()))
        .collect()))
    .is_err());
    assert!(check_softsign_vjp(|x, dy| Ok(x
        .iter()
        .zip(dy)
        .map(|(&x, &g)| g / ((1.0 + x) * (1.0 + x)))
        .collect()))
    .is_err());
    assert!(check_detached_square(|x: &Tensor| x.mul(x)).is_err());
    assert!(check_detached_square(|x: &Tensor| x.detach().mul(&x.detach())).is_err());
    assert!(check_tiny_sigmoid(|x| x.mean_all()).is_err());
    assert!(check_detached_square(|x: &Tensor| x.detach().mul(&x.detach())?.add(x)).is_err());
    assert!(check_tiny_sigmoid(|x| x.elementwise(|v| 1.0 / (1.0 + (-v).exp()), |_, y| y)).is_err());
    assert!(check_coupling_logdet(|s| Ok(s.iter().map(|&v| f64::from(v).ln()).sum())).is_err());
    assert!(check_coupling_logdet(|s| Ok(s.iter().map(|&v| f64::from(v).abs()).sum())).is_err());
    assert!(check_bits_per_dim(|lp, d, _| Ok(-lp / d as f64)).is_err());
    assert!(check_bits_per_dim(|lp, d, _| Ok(-lp / (d as f64 * std::f64::consts::LN_2))).is_err());
}

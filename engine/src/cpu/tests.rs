//! CPU-device behaviour that is not about values: host transfers, and the optimiser
//! step refusing aliased buffers (its write locks would otherwise deadlock).
//!
//! The values of every primitive are checked against the reference device in
//! `engine/tests/primitives.rs` (run with `cargo test -p engine --test primitives`), aliased inputs to
//! `binary` and `concat` included. Run these with `cargo test -p engine cpu::`.

use super::*;

const B: CpuBackend = CpuBackend;

fn buf(data: &[f32]) -> CpuBuffer {
    B.from_host(data).unwrap()
}

fn host(x: &CpuBuffer) -> Vec<f32> {
    B.to_host(x).unwrap()
}

#[test]
fn host_roundtrip_and_full() {
    let x: Vec<f32> = (0..17).map(|i| i as f32 * 0.25 - 2.0).collect();
    assert_eq!(host(&buf(&x)), x);
    assert_eq!(host(&B.full(5, 2.5).unwrap()), vec![2.5; 5]);
    assert!(host(&B.full(0, 1.0).unwrap()).is_empty());
}

#[test]
fn adam_update_refuses_aliased_buffers() {
    let step = AdamUpdate {
        kind: AdamKind::Adam,
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let (a, b, c) = (buf(&[1.0]), buf(&[1.0]), buf(&[1.0]));
    for (p, g, m, v) in [(&a, &a, &b, &c), (&a, &b, &a, &c), (&a, &b, &c, &c)] {
        let err = B.adam_update(p, g, m, v, 1, &step).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    op: "adam_update",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(host(&a), vec![1.0], "nothing was written");
}

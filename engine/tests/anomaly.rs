//! Anomaly detection (`engine::anomaly`) on every device: with it on, the first op that
//! makes a NaN or an infinity from finite inputs fails, naming itself, its pass, its
//! layer scope and its input shapes; with it off, the same computation gives the NaN
//! without an error.

use engine::anomaly::{self, Culprit, NonFinite, Pass};
use engine::backend::{AdamKind, AdamUpdate};
use engine::device_test;
use engine::{no_grad, Error, Result, Tensor};

/// The anomaly report inside `result`'s error; fails if there is none.
fn report<T: std::fmt::Debug>(result: Result<T>) -> NonFinite {
    match result {
        Err(Error::NonFinite(a)) => *a,
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

device_test!(fn log_of_a_negative_number_names_the_op_and_its_scope(dev) {
    let x = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, -5.0, 6.0], &[2, 3], dev)?;
    let run = || -> Result<Tensor> {
        let _layer = anomaly::scope("model.layers.3");
        x.scale(2.0)?.log()?.sum_all()
    };
    // Off: the NaN reaches the loss, and nothing says where it came from.
    assert!(run()?.item()?.is_nan());

    let _on = anomaly::detect_anomaly(true);
    let err = run().unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite output of log (forward) in model.layers.3: input [2, 3]; NaN at [1, 1]"
    );
    let a = report::<()>(Err(err));
    assert_eq!((a.op, a.pass, a.culprit), ("log", Pass::Forward, Culprit::Output));
    assert_eq!((a.scope.as_deref(), a.backward_of), (Some("model.layers.3"), None));
    assert_eq!(a.inputs, vec![vec![2, 3]]);
    Ok(())
});

device_test!(fn only_the_first_producer_is_named(dev) {
    let _on = anomaly::detect_anomaly(true);
    // exp(100) overflows; the mul by 0 that turns the ∞ into NaN only passes it on.
    let x = Tensor::from_slice(&[1.0, 100.0], &[2], dev)?;
    let zero = Tensor::zeros(&[2], dev)?;
    let a = report(x.exp().and_then(|e| e.mul(&zero)));
    assert_eq!((a.op, a.value, a.index), ("exp", f32::INFINITY, vec![1]));
    let e = no_grad(|| -> Result<Tensor> {
        let _off = anomaly::detect_anomaly(false);
        x.exp()
    })?;
    assert!(e.mul(&zero)?.to_vec()?[1].is_nan(), "non-finite inputs are not flagged");
    // A NaN that comes in as data is never flagged: no op produced it.
    let data = Tensor::from_slice(&[f32::NAN, 1.0], &[2], dev)?;
    let loss = data.relu()?.square()?.sum_all()?;
    assert!(loss.item()?.is_nan());
    Ok(())
});

device_test!(fn a_backward_op_is_named_with_the_forward_scope(dev) {
    // √x is finite at 0, its derivative 1 / (2√x) is not: the div inside sqrt's
    // backward closure is the first op to make an ∞, in the scope the forward ran in
    // even though backward() runs outside it.
    let x = Tensor::from_slice(&[0.0, 1.0, 4.0], &[3], dev)?.with_grad();
    let loss = {
        let _layer = anomaly::scope("model.norm");
        x.sqrt()?.sum_all()?
    };
    assert!(loss.backward()?.get(&x).unwrap().to_vec()?[0].is_infinite()); // off

    let _on = anomaly::detect_anomaly(true);
    let loss = {
        let _layer = anomaly::scope("model.norm");
        x.sqrt()?.sum_all()?
    };
    let err = loss.backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite output of div (backward of sqrt) in model.norm: inputs [3] and [3]; inf at [0]"
    );
    let a = report::<()>(Err(err));
    assert_eq!((a.op, a.pass, a.backward_of), ("div", Pass::Backward, Some("sqrt")));
    Ok(())
});

device_test!(fn a_backward_primitive_is_checked_through_its_gradient(dev) {
    // conv2d's input gradient is a backend primitive, not an op: the closure's result is
    // checked. x = 1e-20 and w = 1e20 keep the forward at 27 per pixel; the output
    // gradient 1e30 times w overflows in dx, while dw = 1e30 · 1e-20 · ... stays finite.
    let x = Tensor::full(&[2, 3, 5, 5], 1e-20, dev)?.with_grad();
    let w = Tensor::full(&[4, 3, 3, 3], 1e20, dev)?.with_grad();
    let r = Tensor::full(&[2, 4, 5, 5], 1e30, dev)?;
    let _on = anomaly::detect_anomaly(true);
    let loss = {
        let _layer = anomaly::scope("net.conv1");
        x.conv2d(&w, None)?.mul(&r)?.sum_all()?
    };
    let a = report(loss.backward());
    assert_eq!((a.op, a.pass, a.culprit), ("conv2d", Pass::Backward, Culprit::Gradient(0)));
    assert_eq!((a.scope.as_deref(), a.backward_of), (Some("net.conv1"), None));
    assert_eq!(a.inputs, vec![vec![2, 3, 5, 5], vec![4, 3, 3, 3]]);
    assert_eq!(a.value, f32::INFINITY);
    Ok(())
});

device_test!(fn the_optimiser_update_is_checked(dev) {
    // Adam with eps = 0 on a zero gradient divides 0 by √0.
    let step = AdamUpdate { kind: AdamKind::Adam, lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 0.0, weight_decay: 0.0, step: 1 };
    let fresh = || -> Result<[Tensor; 4]> {
        Ok([
            Tensor::from_slice(&[1.0, 2.0], &[2], dev)?,
            Tensor::from_slice(&[0.0, 0.5], &[2], dev)?,
            Tensor::zeros(&[2], dev)?,
            Tensor::zeros(&[2], dev)?,
        ])
    };
    let [p, g, m, v] = fresh()?;
    p.adam_update(&g, &m, &v, &step)?;
    assert!(p.to_vec()?[0].is_nan()); // off

    let _on = anomaly::detect_anomaly(true);
    let [p, g, m, v] = fresh()?;
    let err = p.adam_update(&g, &m, &v, &step).unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite param written by adam_update (update): inputs [2], [2], [2] and [2]; NaN at [0]"
    );
    Ok(())
});

#[test]
fn scopes_nest_and_do_nothing_while_detection_is_off() {
    assert!(!anomaly::is_enabled());
    {
        let _a = anomaly::scope("flow");
        assert_eq!(anomaly::current_scope(), None);
    }
    let on = anomaly::detect_anomaly(true);
    {
        let _layer = anomaly::scope("flow.layers.17");
        {
            let _block = anomaly::scope("block");
            let want = Some("flow.layers.17.block".to_string());
            assert_eq!(anomaly::current_scope(), want);
        }
        assert_eq!(anomaly::current_scope().as_deref(), Some("flow.layers.17"));
    }
    assert_eq!(anomaly::current_scope(), None);
    drop(on);
    assert!(!anomaly::is_enabled());
}

//! The tape itself: accumulation, no-grad scopes, detaching and misuse of `backward()`.

use engine::device_test;
use engine::{no_grad, Device, Error, Tensor};

device_test!(fn gradients_accumulate_over_uses(dev) {
    // y = x·x + 3x summed: dy/dx = 2x + 3.
    let x = Tensor::from_slice(&[1.0, -2.0, 0.5], &[3], dev)?.with_grad();
    let y = x.mul(&x)?.add(&x.scale(3.0)?)?.sum_all()?;
    let g = y.backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec()?, vec![5.0, -1.0, 4.0]);
    Ok(())
});

device_test!(fn only_leaves_that_need_grad_get_gradients(dev) {
    let w = Tensor::from_slice(&[2.0], &[1], dev)?.with_grad();
    let c = Tensor::from_slice(&[5.0], &[1], dev)?;
    let g = w.mul(&c)?.sum_all()?.backward()?;
    assert_eq!(g.get(&w).unwrap().to_vec()?, vec![5.0]);
    assert!(g.get(&c).is_none());
    assert_eq!(g.len(), 1);
    Ok(())
});

device_test!(fn no_grad_records_nothing(dev) {
    let w = Tensor::ones(&[2, 2], dev)?.with_grad();
    let y = no_grad(|| w.exp()?.sum_all())?;
    assert!(!y.requires_grad());
    assert!(y.op_name().is_none());
    // Recording is back on after the scope.
    let z = w.exp()?.sum_all()?;
    assert_eq!(z.op_name(), Some("sum"));
    assert!(matches!(y.backward(), Err(Error::Autodiff(_))));
    Ok(())
});

device_test!(fn detach_stops_gradients(dev) {
    // d/dx [x · detach(x)] = detach(x) only.
    let x = Tensor::from_slice(&[3.0], &[1], dev)?.with_grad();
    let g = x.mul(&x.detach())?.sum_all()?.backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec()?, vec![3.0]);
    Ok(())
});

device_test!(fn backward_needs_a_scalar(dev) {
    let x = Tensor::ones(&[2], dev)?.with_grad();
    let err = x.exp()?.backward().err().unwrap();
    assert!(err.to_string().contains("scalar"), "{err}");
    Ok(())
});

device_test!(fn deep_chains_walk_in_order(dev) {
    // 200 alternating ops; the gradient of Π (x·1.01) over 100 steps is 1.01^100.
    let x = Tensor::from_slice(&[1.0], &[1], dev)?.with_grad();
    let mut y = x.clone();
    for _ in 0..100 {
        y = y.scale(1.01)?.add_scalar(0.0)?;
    }
    let g = y.sum_all()?.backward()?;
    let expected = 1.01f32.powi(100);
    let got = g.get(&x).unwrap().item()?;
    assert!((got - expected).abs() < 1e-4 * expected, "{got} vs {expected}");
    Ok(())
});

#[test]
fn a_chain_far_deeper_than_any_flow_drops_without_overflowing_the_stack() {
    let dev = Device::Cpu;
    let x = Tensor::ones(&[1], &dev).unwrap().with_grad();
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = y.add_scalar(1.0).unwrap();
    }
    drop(y);
}

#[test]
fn the_graph_dump_shows_ops_in_backward_order_with_values_and_gradients() -> engine::Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::from_slice(&[2.0], &[1], &dev)?.with_grad();
    let b = Tensor::from_slice(&[-3.0], &[1], &dev)?.with_grad();
    let ab = a.mul(&b)?;
    let s = ab.add(&a)?;
    let loss = s.sum_all()?;
    let grads = loss.backward()?;
    let dot = loss.to_dot(Some(&grads))?;
    let line = |needle: &str| dot.lines().any(|l| l.trim() == needle);
    // Ops by backward step: the last op first.
    for (t, op, step) in [(&loss, "sum", 1), (&s, "add", 2), (&ab, "mul", 3)] {
        let want = format!(
            "op{} [shape=ellipse, label=\"{op}\\nbackward step {step}\"];",
            t.id()
        );
        assert!(line(&want), "{want} in\n{dot}");
    }
    // Inputs into each op, each op into its output.
    for (from, to) in [(&a, &ab), (&b, &ab), (&ab, &s), (&a, &s), (&s, &loss)] {
        assert!(line(&format!("t{} -> op{};", from.id(), to.id())), "{dot}");
        assert!(line(&format!("op{} -> t{};", to.id(), to.id())), "{dot}");
    }
    // d loss/da = b + 1 = -2 and d loss/db = a = 2, in the leaves' boxes.
    assert!(dot.contains("data [2.0000]\\ngrad [-2.0000]"), "{dot}");
    assert!(dot.contains("data [-3.0000]\\ngrad [2.0000]"), "{dot}");
    assert_eq!(dot.matches("->").count(), 8);
    Ok(())
}

//! Misuse returns an error naming the op and the shapes; it never panics.
//! One test per op family.

use engine::device_test;
use engine::{Error, Tensor};

/// Asserts `r` is an error whose message contains every fragment.
fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, fragments: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    for f in fragments {
        assert!(msg.contains(f), "error {msg:?} does not mention {f:?}");
    }
}

device_test!(fn construction(dev) {
    expect_err(Tensor::from_slice(&[1.0, 2.0, 3.0], &[2, 2], dev), &["from_slice", "[2, 2]", "3 values"]);
    expect_err(Tensor::zeros(&[1; 7], dev), &["rank 7"]);
    expect_err(Tensor::rand_uniform(&[2], 1.0, 0.0, 0, dev), &["rand_uniform"]);
    expect_err(Tensor::randn(&[2], 0.0, -1.0, 0, dev), &["randn"]);
    expect_err(Tensor::zeros(&[2, 2], dev)?.item(), &["item", "[2, 2]"]);
    Ok(())
});

device_test!(fn elementwise_binary(dev) {
    let a = Tensor::zeros(&[2, 3], dev)?;
    let b = Tensor::zeros(&[4, 3], dev)?;
    expect_err(a.add(&b), &["add", "[2, 3]", "[4, 3]", "broadcast"]);
    expect_err(a.mul(&b), &["mul"]);
    Ok(())
});

device_test!(fn reductions(dev) {
    let a = Tensor::zeros(&[2, 3], dev)?;
    expect_err(a.sum(&[2], false), &["sum", "axis 2", "[2, 3]"]);
    expect_err(a.mean(&[0, 0], false), &["mean", "repeated"]);
    expect_err(a.expand(&[4, 3]), &["expand", "[2, 3]", "[4, 3]"]);
    expect_err(Tensor::zeros(&[0, 3], dev)?.max(&[0], false), &["max", "empty"]);
    Ok(())
});

device_test!(fn matmul(dev) {
    let a = Tensor::zeros(&[2, 3], dev)?;
    expect_err(a.matmul(&Tensor::zeros(&[4, 5], dev)?), &["matmul", "[2, 3]", "[4, 5]"]);
    expect_err(a.matmul(&Tensor::zeros(&[3], dev)?), &["matmul", "[3]"]);
    let (x, y) = (Tensor::zeros(&[2, 2, 3], dev)?, Tensor::zeros(&[3, 3, 4], dev)?);
    expect_err(x.matmul(&y), &["matmul", "[2, 2, 3]", "[3, 3, 4]"]);
    Ok(())
});

device_test!(fn conv2d(dev) {
    let x = Tensor::zeros(&[1, 3, 4, 4], dev)?;
    expect_err(x.conv2d(&Tensor::zeros(&[2, 4, 3, 3], dev)?, None), &["conv2d", "3 channels", "expects 4"]);
    expect_err(x.conv2d(&Tensor::zeros(&[2, 3, 2, 2], dev)?, None), &["conv2d", "odd"]);
    expect_err(x.conv2d(&Tensor::zeros(&[2, 3, 3], dev)?, None), &["conv2d", "[2, 3, 3]"]);
    let w = Tensor::zeros(&[2, 3, 3, 3], dev)?;
    expect_err(x.conv2d(&w, Some(&Tensor::zeros(&[3], dev)?)), &["conv2d", "bias"]);
    Ok(())
});

device_test!(fn layout(dev) {
    let a = Tensor::zeros(&[2, 3], dev)?;
    expect_err(a.reshape(&[4, 2]), &["reshape", "[2, 3]", "[4, 2]"]);
    expect_err(a.permute(&[0, 0]), &["permute", "not a permutation"]);
    expect_err(a.slice(1, 2, 2), &["slice", "out of bounds", "[2, 3]"]);
    expect_err(a.transpose(0, 5), &["transpose", "axis 5"]);
    expect_err(Tensor::concat(&[&a, &Tensor::zeros(&[3, 3], dev)?], 1), &["concat", "[2, 3]", "[3, 3]"]);
    expect_err(Tensor::concat(&[], 0), &["concat"]);
    expect_err(a.gather(1, &[0, 3]), &["gather", "index 3"]);
    expect_err(a.with_grad().gather(1, &[0, 0, 1]), &["gather", "permutation"]);
    Ok(())
});

device_test!(fn optimiser(dev) {
    use engine::backend::{AdamKind, AdamUpdate};
    let p = Tensor::zeros(&[3], dev)?;
    let (m, v) = (Tensor::zeros(&[3], dev)?, Tensor::zeros(&[3], dev)?);
    let step = AdamUpdate { kind: AdamKind::Adam, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
    expect_err(p.adam_update(&Tensor::zeros(&[4], dev)?, &m, &v, &step), &["adam_update", "[4]", "[3]"]);
    expect_err(p.adam_update(&p, &m, &v, &AdamUpdate { step: 0, ..step }), &["adam_update", "step"]);
    Ok(())
});

device_test!(fn autodiff(dev) {
    let x = Tensor::ones(&[2], dev)?;
    expect_err(x.sum_all()?.backward(), &["autodiff", "requires grad"]);
    Ok(())
});

#[cfg(feature = "vulkan")]
#[test]
fn mixing_devices() {
    let Some(vk) = engine::testing::vulkan_device() else {
        return;
    };
    let a = Tensor::zeros(&[2], &engine::Device::Cpu).unwrap();
    let b = Tensor::zeros(&[2], &vk).unwrap();
    expect_err(a.add(&b), &["add", "different devices", "cpu"]);
    expect_err(a.matmul(&b), &["matmul", "different devices"]);
}

// The network, its loss and its training loop, written once against a `Tensor` API that
// both `engine` and stop 0's `glow_rs::tiny` provide. `examples/mlp.rs` includes these
// lines twice, once after each engine's `use` line.

/// `n` points in `[-1, 1)²` and their labels: +1 inside the circle of radius 0.7,
/// else −1 (about 38% of the square is inside).
fn data(n: usize, seed: u64, dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::rand_uniform(&[n, 2], -1.0, 1.0, seed, dev)?;
    let labels: Vec<f32> = x
        .to_vec()?
        .chunks(2)
        .map(|p| {
            if p[0] * p[0] + p[1] * p[1] < 0.49 {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    Ok((x, Tensor::from_vec(labels, &[n, 1], dev)?))
}

/// The network's logits `[n, 1]`: `tanh(x·W1 + b1)·W2 + b2`.
fn logits(p: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let hidden = x.matmul(&p[0])?.add(&p[1])?.tanh()?;
    hidden.matmul(&p[2])?.add(&p[3])
}

/// The mean logistic loss `softplus(−y · logit)` (labels ±1).
fn loss(p: &[Tensor], x: &Tensor, y: &Tensor) -> Result<Tensor> {
    logits(p, x)?.mul(y)?.neg()?.softplus()?.mean_all()
}

/// The share of points whose logit has the label's sign.
fn accuracy(p: &[Tensor], x: &Tensor, y: &Tensor) -> Result<f32> {
    let margins = no_grad(|| logits(p, x)?.mul(y))?.to_vec()?;
    Ok(margins.iter().filter(|&&m| m > 0.0).count() as f32 / margins.len() as f32)
}

/// Trains the MLP on `dev` for 500 steps, printing the loss every 100. Returns the
/// loss before and after, and the accuracy on 256 points it never saw.
pub fn run(dev: &Device) -> Result<(f32, f32, f32)> {
    let (x, y) = data(256, 1, dev)?;
    let (x_test, y_test) = data(256, 2, dev)?;
    let hidden = 16;
    // Parameters are leaves that require grad; randn's std keeps tanh out of saturation.
    let mut params = vec![
        Tensor::randn(&[2, hidden], 0.0, 1.0, 10, dev)?.with_grad(),
        Tensor::zeros(&[hidden], dev)?.with_grad(),
        Tensor::randn(&[hidden, 1], 0.0, 0.5, 11, dev)?.with_grad(),
        Tensor::zeros(&[1], dev)?.with_grad(),
    ];
    let first_loss = loss(&params, &x, &y)?.item()?;
    for step in 0..500 {
        let l = loss(&params, &x, &y)?;
        if step % 100 == 0 {
            println!("step {step:3}  loss {:.4}", l.item()?);
        }
        let grads = l.backward()?;
        // Gradient descent with rate 0.5: p <- p - 0.5 * dL/dp. Under no_grad, because
        // the update is no part of any loss: nothing is recorded, and each new parameter
        // is a fresh leaf.
        params = no_grad(|| {
            params
                .iter()
                .map(|p| {
                    let step = grads.get(p).expect("reaches the loss").scale(0.5)?;
                    Ok(p.sub(&step)?.with_grad())
                })
                .collect::<Result<_>>()
        })?;
    }
    let last = loss(&params, &x, &y)?.item()?;
    Ok((first_loss, last, accuracy(&params, &x_test, &y_test)?))
}


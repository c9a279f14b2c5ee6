//! Stop 0 of the tour (`docs/tour.md`): the whole idea of the engine in one short file,
//! before the real one. Small `f32` tensors on the host, no devices and no kernels, but
//! the same design as `engine`: every tensor gets an id from a counter that only grows;
//! an op's output carries a node with its inputs and a closure that turns the output's
//! gradient into theirs (the vector-Jacobian product); `backward()` sorts the tensors it
//! reaches by id, newest first, which is an order where every gradient is complete
//! before it is passed on, and walks them. `examples/mlp.rs` trains the same network, the
//! same lines, on this and on `engine`.
//!
//! ```
//! use glow_rs::tiny::{Device, Tensor};
//! let x = Tensor::from_vec(vec![3.0], &[1], &Device::Host)?.with_grad();
//! let loss = x.mul(&x)?.add(&x)?.mean_all()?; // x² + x, so d/dx = 2x + 1 = 7
//! assert_eq!(loss.backward()?.get(&x).unwrap().to_vec()?, vec![7.0]);
//! # Ok::<(), String>(())
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Errors are plain messages here.
pub type Result<T> = std::result::Result<T, String>;

/// There is one place to compute: the host. (The engine's `Device` picks a backend.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// This process's memory and the calling thread.
    Host,
}

/// Ids grow with creation time, so an op's output is newer than its inputs.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local!(static RECORDING: Cell<bool> = const { Cell::new(true) });

/// The vector-Jacobian product of one op: output values and gradient to input gradients.
type Vjp = Box<dyn Fn(&[f32], &[f32]) -> Vec<Vec<f32>>>;

/// A small dense tensor; cloning shares it.
#[derive(Clone)]
pub struct Tensor(Rc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(t{} {:?} {:?})",
            self.0.id, self.0.shape, self.0.data
        )
    }
}

struct Inner {
    id: usize,
    shape: Vec<usize>,
    data: Vec<f32>,
    requires_grad: bool,
    /// The op's inputs and its VJP, when it was recorded.
    node: Option<(Vec<Tensor>, Vjp)>,
}

/// The gradient of each leaf that required one, by id.
pub struct Gradients(HashMap<usize, Tensor>);

impl Gradients {
    /// The gradient of `t`, if it is a leaf the loss depends on.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.0.id)
    }
}

/// One step of the walk of [`Tensor::backward_steps`].
pub struct Step {
    /// The tensor reached.
    pub id: usize,
    /// The gradient it received: the sum of what every op that read it sent.
    pub grad: Vec<f32>,
    /// The gradients summed so far for tensors not reached yet, newest first.
    pub pending: Vec<(usize, Vec<f32>)>,
}

/// Runs `f` without recording any op.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    /// Puts recording back as it was when dropped, even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RECORDING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RECORDING.with(|r| r.replace(false)));
    f()
}

/// A uniform draw in `[0, 1)` from `state` (xorshift64*).
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
}

impl Tensor {
    fn make(shape: &[usize], data: Vec<f32>, node: Option<(Vec<Tensor>, Vjp)>) -> Tensor {
        let recording = RECORDING.with(|r| r.get());
        let node = node.filter(|(inputs, _)| recording && inputs.iter().any(|t| t.0.requires_grad));
        Tensor(Rc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: shape.to_vec(),
            data,
            requires_grad: node.is_some(),
            node,
        }))
    }

    /// A tensor of `shape` holding `data`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], _: &Device) -> Result<Tensor> {
        match shape.iter().product::<usize>() == data.len() {
            true => Ok(Tensor::make(shape, data, None)),
            false => Err(format!("{} values for shape {shape:?}", data.len())),
        }
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dev: &Device) -> Result<Tensor> {
        Tensor::from_vec(vec![0.0; shape.iter().product()], shape, dev)
    }

    /// Uniform in `[lo, hi)`, from `seed`.
    pub fn rand_uniform(
        shape: &[usize],
        lo: f32,
        hi: f32,
        seed: u64,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let n = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| lo + (hi - lo) * uniform(&mut s)).collect(),
            shape,
            dev,
        )
    }

    /// Normal with `mean` and `std` (Box–Muller), from `seed`.
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64, dev: &Device) -> Result<Tensor> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut normal = || {
            let (u, v) = (1.0 - uniform(&mut s), uniform(&mut s));
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| mean + std * normal()).collect(), shape, dev)
    }

    /// The same values as a leaf that asks for its gradient: a parameter.
    pub fn with_grad(&self) -> Tensor {
        let mut t = Tensor::make(&self.0.shape, self.0.data.clone(), None);
        Rc::get_mut(&mut t.0).expect("a new tensor").requires_grad = true;
        t
    }

    /// The values, row-major.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(self.0.data.clone())
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.0.data[..] {
            [v] => Ok(v),
            _ => Err(format!("item() of shape {:?}", self.0.shape)),
        }
    }

    /// An elementwise op: `y = f(x)`, whose derivative `df(x, y)` may use the input, the
    /// output or both. `neg`, `scale`, `tanh` and `softplus` below are made this way.
    pub fn elementwise(
        &self,
        f: impl Fn(f32) -> f32,
        df: impl Fn(f32, f32) -> f32 + 'static,
    ) -> Result<Tensor> {
        let x = self.0.data.clone();
        let vjp: Vjp = Box::new(move |y, dy| {
            vec![x
                .iter()
                .zip(y)
                .zip(dy)
                .map(|((&x, &y), &g)| g * df(x, y))
                .collect()]
        });
        Ok(Tensor::make(
            &self.0.shape,
            self.0.data.iter().map(|&v| f(v)).collect(),
            Some((vec![self.clone()], vjp)),
        ))
    }

    /// `−x`.
    pub fn neg(&self) -> Result<Tensor> {
        self.elementwise(|x| -x, |_, _| -1.0)
    }

    /// `s · x`.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        self.elementwise(move |x| s * x, move |_, _| s)
    }

    /// `tanh x`; its derivative is `1 − y²`.
    pub fn tanh(&self) -> Result<Tensor> {
        self.elementwise(f32::tanh, |_, y| 1.0 - y * y)
    }

    /// `ln(1 + eˣ)`; its derivative is the sigmoid.
    pub fn softplus(&self) -> Result<Tensor> {
        self.elementwise(
            |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
            |x, _| 1.0 / (1.0 + (-x).exp()),
        )
    }

    /// `a ∘ b` for `∘` one of `+ − ·`, elementwise; `b` may be a row `[k]` added to every
    /// row of `a [n, k]`, whose gradient then sums over the rows.
    fn zip(&self, b: &Tensor, op: char) -> Result<Tensor> {
        let (ad, bd) = (self.0.data.clone(), b.0.data.clone());
        let row = op == '+' && b.0.shape.len() == 1 && self.0.shape.last() == b.0.shape.first();
        if self.0.shape != b.0.shape && !row {
            return Err(format!(
                "{op} of shapes {:?} and {:?}",
                self.0.shape, b.0.shape
            ));
        }
        let f = move |x: f32, y: f32| match op {
            '+' => x + y,
            '-' => x - y,
            _ => x * y,
        };
        let out = ad
            .iter()
            .enumerate()
            .map(|(i, &x)| f(x, bd[i % bd.len()]))
            .collect();
        let vjp: Vjp = Box::new(move |_, dy| {
            let (mut da, mut db) = (vec![0.0; ad.len()], vec![0.0; bd.len()]);
            for (i, &g) in dy.iter().enumerate() {
                let (x, y) = (ad[i], bd[i % bd.len()]);
                let (gx, gy) = match op {
                    '+' => (1.0, 1.0),
                    '-' => (1.0, -1.0),
                    _ => (y, x),
                };
                da[i] += g * gx;
                db[i % bd.len()] += g * gy;
            }
            vec![da, db]
        });
        Ok(Tensor::make(
            &self.0.shape,
            out,
            Some((vec![self.clone(), b.clone()], vjp)),
        ))
    }

    /// `a + b`, same shapes, or a row `b [k]` added to every row of `a [n, k]`.
    pub fn add(&self, b: &Tensor) -> Result<Tensor> {
        self.zip(b, '+')
    }

    /// `a − b`, same shapes.
    pub fn sub(&self, b: &Tensor) -> Result<Tensor> {
        self.zip(b, '-')
    }

    /// `a · b` elementwise, same shapes.
    pub fn mul(&self, b: &Tensor) -> Result<Tensor> {
        self.zip(b, '*')
    }

    /// The mean of all values, `[]`; each input gets `dy / n`.
    pub fn mean_all(&self) -> Result<Tensor> {
        let n = self.0.data.len();
        let vjp: Vjp = Box::new(move |_, dy| vec![vec![dy[0] / n as f32; n]]);
        let mean = self.0.data.iter().sum::<f32>() / n as f32;
        Ok(Tensor::make(
            &[],
            vec![mean],
            Some((vec![self.clone()], vjp)),
        ))
    }

    /// `[n, k] × [k, m]`; `da = dy · bᵀ`, `db = aᵀ · dy`.
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        let (&[n, k], &[k2, m]) = (&self.0.shape[..], &b.0.shape[..]) else {
            return Err("matmul takes two matrices".into());
        };
        if k != k2 {
            return Err(format!("matmul of [{n}, {k}] and [{k2}, {m}]"));
        }
        let (ad, bd) = (self.0.data.clone(), b.0.data.clone());
        let mut out = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                out[i * m + j] = (0..k).map(|p| ad[i * k + p] * bd[p * m + j]).sum();
            }
        }
        let vjp: Vjp = Box::new(move |_, dy| {
            let (mut da, mut db) = (vec![0.0; n * k], vec![0.0; k * m]);
            for i in 0..n {
                for j in 0..m {
                    for p in 0..k {
                        da[i * k + p] += dy[i * m + j] * bd[p * m + j];
                        db[p * m + j] += ad[i * k + p] * dy[i * m + j];
                    }
                }
            }
            vec![da, db]
        });
        Ok(Tensor::make(
            &[n, m],
            out,
            Some((vec![self.clone(), b.clone()], vjp)),
        ))
    }

    /// This tensor's id: later tensors have larger ones.
    pub fn id(&self) -> usize {
        self.0.id
    }

    /// The gradient of this one-element loss with respect to every leaf that asks for one.
    pub fn backward(&self) -> Result<Gradients> {
        self.walk(|_, _, _| {})
    }

    /// [`Tensor::backward`]'s walk, step by step: each tensor it reaches, in order, with
    /// the gradient it received and the gradients still pending afterwards (what the
    /// tour's picture of the tape draws).
    pub fn backward_steps(&self) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        self.walk(|t, dy, pending| {
            let mut pending: Vec<(usize, Vec<f32>)> =
                pending.iter().map(|(&id, g)| (id, g.clone())).collect();
            pending.sort_by_key(|p| std::cmp::Reverse(p.0));
            steps.push(Step {
                id: t.0.id,
                grad: dy.to_vec(),
                pending,
            });
        })?;
        Ok(steps)
    }

    /// The walk of [`Tensor::backward`], calling `visit(tensor, its gradient, pending)`
    /// after each tensor has passed its gradient on.
    fn walk(
        &self,
        mut visit: impl FnMut(&Tensor, &[f32], &HashMap<usize, Vec<f32>>),
    ) -> Result<Gradients> {
        // As the engine does: a scalar loss, that depends on something asking for a
        // gradient.
        if self.0.data.len() != 1 {
            return Err(format!(
                "backward() needs a one-element loss, got shape {:?}",
                self.0.shape
            ));
        }
        if !self.0.requires_grad {
            return Err("backward(): the loss depends on no tensor that requires grad".into());
        }
        // Every tensor the loss depends on, newest first: the tape.
        let (mut tape, mut stack, mut seen) = (Vec::new(), vec![self.clone()], HashMap::new());
        while let Some(t) = stack.pop() {
            if seen.insert(t.0.id, ()).is_none() {
                if let Some((inputs, _)) = &t.0.node {
                    stack.extend(inputs.iter().filter(|i| i.0.requires_grad).cloned());
                }
                tape.push(t);
            }
        }
        tape.sort_by_key(|t| std::cmp::Reverse(t.0.id));
        // The gradient summed so far for each tensor, seeded with d loss / d loss = 1.
        let mut pending: HashMap<usize, Vec<f32>> = HashMap::from([(self.0.id, vec![1.0])]);
        let mut grads = HashMap::new();
        for t in tape {
            let Some(dy) = pending.remove(&t.0.id) else {
                continue;
            };
            let Some((inputs, vjp)) = &t.0.node else {
                visit(&t, &dy, &pending);
                grads.insert(t.0.id, Tensor::make(&t.0.shape, dy, None));
                continue;
            };
            for (input, dx) in inputs.iter().zip(vjp(&t.0.data, &dy)) {
                if !input.0.requires_grad {
                    continue;
                }
                let sum = pending
                    .entry(input.0.id)
                    .or_insert_with(|| vec![0.0; dx.len()]);
                sum.iter_mut().zip(dx).for_each(|(s, d)| *s += d);
            }
            visit(&t, &dy, &pending);
        }
        Ok(Gradients(grads))
    }
}

#[cfg(test)]
mod tests {
    use super::{no_grad, Device, Tensor};

    #[test]
    fn backward_needs_a_one_element_loss_that_depends_on_a_parameter() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], &Device::Host)
            .unwrap()
            .with_grad();
        assert!(x.tanh().unwrap().backward().is_err());
        let c = Tensor::from_vec(vec![1.0], &[1], &Device::Host).unwrap();
        assert!(c.tanh().unwrap().mean_all().unwrap().backward().is_err());
        assert!(no_grad(|| x.mean_all()).unwrap().backward().is_err());
    }

    #[test]
    fn add_broadcasts_rows_only_and_the_others_need_one_shape() {
        let dev = Device::Host;
        let a = Tensor::from_vec(vec![1.0; 6], &[2, 3], &dev).unwrap();
        let row = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], &dev).unwrap();
        let two = Tensor::from_vec(vec![1.0, 2.0], &[2], &dev).unwrap();
        let t = Tensor::from_vec(vec![1.0; 6], &[3, 2], &dev).unwrap();
        assert_eq!(
            a.add(&row).unwrap().to_vec().unwrap(),
            [2.0, 3.0, 4.0, 2.0, 3.0, 4.0]
        );
        assert!(a.add(&two).is_err());
        assert!(a.mul(&row).is_err());
        assert!(a.mul(&t).is_err());
    }
}

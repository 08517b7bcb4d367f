//! int8 serving on a CPU: the encoder's linear projections as int8 × int8 matrix products.
//!
//! Each projection's weight is quantized once per loaded model, symmetrically with one scale
//! per output row. Activations are quantized on every call with one scale and zero point per
//! token (row), asymmetrically. Per token rather than per tensor for two reasons. A tensor-wide
//! scale is set by a few outlier dimensions of a few tokens, and rounds every other token
//! coarsely: on CaseHOLD it cost the bi-encoder 1.5 points of accuracy@1 (docs/int8.md). And a
//! pair's scores would depend on which other pairs share its batch. Asymmetric, because GELU's outputs (the
//! FFN's second projection reads them) barely go below zero, so a symmetric range would waste
//! half its codes.
//!
//! The product is ATen's `_int_mm` (int8 × int8 with int32 accumulation; oneDNN's VNNI or AVX2
//! kernels on x86). With `x ≈ s·(q − z)` per token and `W ≈ w·Q` per output row:
//!
//! `y = w·(s·(q·Qᵀ) − (s·z)·ΣQ) + b`,
//!
//! three passes over the output: scale by token, a rank-1 update, then scale by row and add the
//! bias in one. (A rank-2 matrix product for the last two was slower: MKL's sgemm is slow at an
//! inner size of 2. See docs/int8.md.)
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;

use tch::{nn, Kind as DType, Tensor};

/// One projection's weight, quantized.
struct Quantized {
    /// Qᵀ, [in, out] int8.
    weight_t: Tensor,
    /// w, each output row's scale, [out].
    scales: Tensor,
    /// ΣQ, each output row's sum of its int8 weights, [out]: what the zero points subtract.
    sums: Tensor,
    /// b, [out] (zeros for a projection without one).
    bias: Tensor,
}

impl Quantized {
    /// `linears`, which read the same input, as one projection: their rows stacked.
    fn new(linears: &[&nn::Linear]) -> Quantized {
        tch::no_grad(|| {
            let ws: Vec<&Tensor> = linears.iter().map(|l| &l.ws).collect();
            let w = Tensor::cat(&ws, 0).to_kind(DType::Float);
            let scales = w
                .abs()
                .amax([1], false)
                .clamp_min(f64::from(f32::MIN_POSITIVE))
                / 127.0;
            let q = (&w / scales.unsqueeze(1)).round().clamp(-127, 127);
            let biases: Vec<Tensor> = linears
                .iter()
                .map(|l| match &l.bs {
                    Some(b) => b.to_kind(DType::Float),
                    None => {
                        l.ws.new_zeros([l.ws.size()[0]], (DType::Float, l.ws.device()))
                    }
                })
                .collect();
            let bias = Tensor::cat(&biases, 0);
            Quantized {
                sums: q.sum_dim_intlist(1, false, DType::Float),
                weight_t: q.to_kind(DType::Int8).tr().contiguous(),
                scales,
                bias,
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        let inputs = *shape
            .last()
            .expect("a projection's input has a last dimension");
        let x = x.to_kind(DType::Float).reshape([-1, inputs]);
        // Each token's range, widened to hold 0 so that 0 is exactly one of its codes.
        let lo = x.amin([1], true).clamp_max(0.0);
        let hi = x.amax([1], true).clamp_min(0.0);
        let scale = ((hi - &lo) / 255.0).clamp_min(f64::from(f32::MIN_POSITIVE));
        let zero = -(lo / &scale).round() - 128.0;
        let q = (x / &scale)
            .round()
            .g_add_(&zero)
            .clamp_(-128, 127)
            .to_kind(DType::Int8);
        let mut y = q.internal_int_mm(&self.weight_t).to_kind(DType::Float);
        let _ = y.g_mul_(&scale);
        let _ = y.addr_(&(-(scale * zero)).squeeze_dim(1), &self.sums);
        let y = self.bias.addcmul_out(&y, &y, &self.scales);
        *shape.last_mut().expect("checked above") = self.scales.size()[0];
        y.view(shape.as_slice())
    }
}

/// A model's quantized projections, made on each one's first int8 call and kept as long as the
/// model: keyed by the addresses of the fp32 weights' data, which the model holds unchanged while
/// it serves. The lock is held through each product: a model scores on one thread at a time, and
/// tch's tensors may not be shared between threads.
#[derive(Default)]
pub(crate) struct Weights(Mutex<HashMap<Vec<usize>, Quantized>>);

impl Weights {
    fn forward(&self, linears: &[&nn::Linear], x: &Tensor) -> Tensor {
        let key = linears.iter().map(|l| l.ws.data_ptr() as usize).collect();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| Quantized::new(linears))
            .forward(x)
    }

    /// How many quantized products the model has made so far (projections of one input that run
    /// as one count once).
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

thread_local! {
    /// The quantized projections of the model whose int8 forward pass runs on this thread.
    static ACTIVE: Cell<*const Weights> = const { Cell::new(std::ptr::null()) };
}

/// Restores the thread's previous model when the region ends, even by a panic.
struct Region(*const Weights);

impl Drop for Region {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Runs `f` with the projections it calls through [`linear`] in int8, quantized into `weights`.
pub(crate) fn region<T>(weights: &Weights, f: impl FnOnce() -> T) -> T {
    let _region = Region(ACTIVE.with(|a| a.replace(weights as *const Weights)));
    f()
}

/// Calls `f` with the weights of the model whose int8 region this thread is in, if any.
fn with_active<T>(f: impl FnOnce(Option<&Weights>) -> T) -> T {
    let active = ACTIVE.with(|a| a.get());
    // SAFETY: `region` set it from a reference that outlives the region, and resets it on
    // leaving; the reference made here lives only as long as `f`, inside the region.
    f((!active.is_null()).then(|| unsafe { &*active }))
}

/// A projection's `linear` on `x`: in int8 inside a [`region`], in fp32 otherwise.
pub(crate) fn linear(linear: &nn::Linear, x: &Tensor) -> Tensor {
    with_active(|weights| match weights {
        Some(weights) => weights.forward(&[linear], x),
        None => nn::Module::forward(linear, x),
    })
}

/// Projections of the same `x` (a layer's query, key and value) inside a [`region`]: one int8
/// product over their stacked weights, `x` quantized once, split back into each one's output.
/// `None` outside a region, where each runs on its own.
pub(crate) fn linears(linears: &[&nn::Linear], x: &Tensor) -> Option<Vec<Tensor>> {
    with_active(|weights| {
        let y = weights?.forward(linears, x);
        let sizes: Vec<i64> = linears.iter().map(|l| l.ws.size()[0]).collect();
        Some(y.split_with_sizes(sizes.as_slice(), -1))
    })
}

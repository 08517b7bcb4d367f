//! int8 serving on a CPU: the encoder's linear projections as int8 × uint8 matrix products.
//!
//! Each projection's weight is quantized once per loaded model, symmetrically per output row
//! (one scale per row), and packed for fbgemm; activations are quantized per call, per tensor,
//! to uint8 by fbgemm itself, which then multiplies with int32 accumulation and returns fp32.
//! Everything else (embeddings, attention, norms, heads, pooling) stays in fp32.
//!
//! tch 0.24 leaves ATen's fbgemm functions out of its C API, and PyTorch's newer dynamic int8
//! linear (`quantized::linear_dynamic`) takes a TorchScript custom class that no C API reaches.
//! So this module calls two ATen operators that libtorch_cpu exports, through their C++
//! entry points, as `precision` does for autocast: `fbgemm_pack_quantized_matrix` and
//! `fbgemm_linear_int8_weight_fp32_activation`. Both take `const at::Tensor&` (what a tch
//! handle points to) and `const c10::Scalar&` (what torch-sys's scalar handle points to), and
//! return an `at::Tensor` by value, which the Itanium C++ ABI passes as a hidden first pointer
//! to the memory to build it in: here, the handle of a fresh undefined tch tensor, whose
//! previous value holds no reference to release. They throw only on a CPU without AVX2 or on
//! shapes this module never passes, and [`supported`] is checked before either is called.
//!
//! The legacy operator takes one weight scale per tensor. Per-row scales keep much more of the
//! weights (a row of small weights is not rounded on the scale of the largest), so it is given
//! scale 1 and the bias divided by each row's scale, and the output is multiplied by the row
//! scales: one element-wise pass.
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tch::{nn, Kind as DType, Tensor};

mod aten {
    use torch_sys::{C_scalar, C_tensor};
    extern "C" {
        #[link_name = "_ZN2at4_ops28fbgemm_pack_quantized_matrix4callERKNS_6TensorE"]
        pub fn pack_quantized_matrix(out: *mut C_tensor, weight: *const C_tensor);
        #[link_name = "_ZN2at4_ops41fbgemm_linear_int8_weight_fp32_activation4callERKNS_6TensorES4_S4_S4_RKN3c106ScalarES8_S4_"]
        pub fn linear_int8_weight_fp32_activation(
            out: *mut C_tensor,
            input: *const C_tensor,
            weight: *const C_tensor,
            packed: *const C_tensor,
            col_offsets: *const C_tensor,
            weight_scale: *const C_scalar,
            weight_zero_point: *const C_scalar,
            bias: *const C_tensor,
        );
    }
}

/// Whether this CPU runs fbgemm's int8 kernels (they need AVX2; ATen throws otherwise).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An ATen operator's result, built in a fresh tensor handle (see the module comment).
fn built(f: impl FnOnce(*mut torch_sys::C_tensor)) -> Tensor {
    let mut out = Tensor::new();
    f(out.as_mut_ptr());
    out
}

/// A torch-sys scalar handle, freed when dropped.
struct Scalar(*mut torch_sys::C_scalar);

impl Scalar {
    fn float(v: f64) -> Scalar {
        // SAFETY: allocates a `c10::Scalar`; never fails.
        Scalar(unsafe { torch_sys::ats_float(v) })
    }
    fn int(v: i64) -> Scalar {
        // SAFETY: as above.
        Scalar(unsafe { torch_sys::ats_int(v) })
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        // SAFETY: the handle came from `ats_float`/`ats_int` and is freed once.
        unsafe { torch_sys::ats_free(self.0) }
    }
}

/// One projection's weight, quantized and packed.
struct Packed {
    /// [out, in] int8: fbgemm reads the shape from it.
    weight: Tensor,
    packed: Tensor,
    /// Each output row's sum of its int8 weights, [out] int32: fbgemm's correction for the
    /// activations' zero point.
    col_offsets: Tensor,
    /// Each output row's scale, [out].
    scales: Tensor,
    /// The bias over the scales, [out] (zeros for a projection without one).
    bias: Tensor,
    one: Scalar,
    zero: Scalar,
}

// SAFETY: the scalars are read-only `c10::Scalar`s, and the tensors are never written after
// packing; a model's projections run on one thread at a time (the `Mutex` below).
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

impl Packed {
    fn new(linear: &nn::Linear) -> Packed {
        tch::no_grad(|| {
            let w = linear.ws.to_kind(DType::Float).contiguous();
            let scales = w.abs().amax([1], false).clamp_min(f64::MIN_POSITIVE) / 127.0;
            let weight = (&w / scales.unsqueeze(1))
                .round()
                .clamp(-127, 127)
                .to_kind(DType::Int8)
                .contiguous();
            let col_offsets = weight.sum_dim_intlist(1, false, DType::Int).contiguous();
            let bias = match &linear.bs {
                Some(b) => b.to_kind(DType::Float) / &scales,
                None => scales.zeros_like(),
            }
            .contiguous();
            // SAFETY: see the module comment; `weight` is a contiguous 2-D int8 tensor.
            let packed = built(|out| unsafe { aten::pack_quantized_matrix(out, weight.as_ptr()) });
            Packed {
                weight,
                packed,
                col_offsets,
                scales,
                bias,
                one: Scalar::float(1.0),
                zero: Scalar::int(0),
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x.to_kind(DType::Float);
        // SAFETY: see the module comment; `x` is fp32 with its last dimension the weight's
        // input size (the projection's own shape), every other tensor as `new` made it.
        let mut y = built(|out| unsafe {
            aten::linear_int8_weight_fp32_activation(
                out,
                x.as_ptr(),
                self.weight.as_ptr(),
                self.packed.as_ptr(),
                self.col_offsets.as_ptr(),
                self.one.0,
                self.zero.0,
                self.bias.as_ptr(),
            )
        });
        let _ = y.g_mul_(&self.scales);
        y
    }
}

/// A model's packed projections, made on each projection's first int8 call and kept as long as
/// the model: keyed by the address of the fp32 weight's data, which the model holds unchanged
/// while it serves.
#[derive(Default)]
pub(crate) struct Weights(Mutex<HashMap<usize, Arc<Packed>>>);

impl Weights {
    fn packed(&self, linear: &nn::Linear) -> Arc<Packed> {
        let key = linear.ws.data_ptr() as usize;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Packed::new(linear)))
            .clone()
    }

    /// How many projections have been packed so far.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

thread_local! {
    /// The packed projections of the model whose int8 forward pass runs on this thread.
    static ACTIVE: Cell<*const Weights> = const { Cell::new(std::ptr::null()) };
}

/// Restores the thread's previous model when the region ends, even by a panic.
struct Region(*const Weights);

impl Drop for Region {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Runs `f` with the projections it calls through [`linear`] in int8, packed into `weights`.
pub(crate) fn region<T>(weights: &Weights, f: impl FnOnce() -> T) -> T {
    let _region = Region(ACTIVE.with(|a| a.replace(weights as *const Weights)));
    f()
}

/// A projection's `linear` on `x`: in int8 inside a [`region`], in fp32 otherwise.
pub(crate) fn linear(linear: &nn::Linear, x: &Tensor) -> Tensor {
    let active = ACTIVE.with(|a| a.get());
    if active.is_null() {
        return nn::Module::forward(linear, x);
    }
    // SAFETY: `region` set it from a reference that outlives the region, and resets it on leaving.
    let weights = unsafe { &*active };
    weights.packed(linear).forward(x)
}

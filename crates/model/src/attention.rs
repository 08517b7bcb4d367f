//! Which kernel runs attention on a GPU.
//!
//! On Hopper cards, libtorch's `scaled_dot_product_attention` picks cuDNN's attention kernel for
//! bf16 with a padding mask. cuDNN builds an execution plan for every new (batch, length) shape,
//! and finerank's shapes come from the data: length-sorted, token-budget batches, each padded to
//! its own longest input, so nearly every batch is a shape not seen before. On an H200, a forward
//! and backward pass at MiniLM's shape took 278 ms at a new length against 0.95 ms with the
//! memory-efficient kernel (`bench/sdpa-shapes.py`), and switching cuDNN's kernel off raised bf16
//! cross-encoder fine-tuning from 76 to 698 pairs/s (`bench/gpu.sh run`). libtorch then takes the
//! memory-efficient kernel, which needs no plan.
//!
//! tch has no call for this switch, so, as in `precision`, ATen's own C++ function is called:
//! `at::globalContext()` returns the process's `at::Context`, whose `setSDPUseCuDNN(bool)` is a
//! plain member function taking `this` first.
use std::ffi::c_void;

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context14setSDPUseCuDNNEb"]
    fn set_sdp_use_cudnn(context: *mut c_void, enabled: bool);
}

/// Keeps `scaled_dot_product_attention` off cuDNN's kernel for the rest of the process.
pub(crate) fn avoid_cudnn_kernel() {
    // SAFETY: `globalContext` returns a reference to a static that lives as long as the process,
    // and the setter only stores a flag that each attention call reads.
    unsafe { set_sdp_use_cudnn(global_context(), false) }
}

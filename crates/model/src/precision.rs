//! The arithmetic a model runs in: fp32, bf16 under libtorch's autocast, or int8 projections
//! (the `int8` module).
//!
//! bf16 is mixed precision through libtorch's autocast.
//! tch 0.24's C API can switch autocast on for CUDA only, and only at libtorch's default dtype
//! there, fp16, which needs loss scaling that tch lacks. bf16 keeps fp32's range and needs none.
//! So this module calls ATen's own C++ autocast functions, which libtorch_cpu exports. They take
//! `c10::DeviceType` and `c10::ScalarType`, both `enum class : int8_t`, so they are passed as
//! `i8`. Each of them only reads or writes thread-local state, and none throws for the values
//! passed here (CPU or CUDA, bf16).
use tch::Device;

use crate::ModelError;

/// The arithmetic a model runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// bf16 on a GPU, fp32 on a CPU: there bf16 moves scores by up to about 1e-3, and only
    /// cores with AMX or AVX-512 bf16 units run it faster.
    #[default]
    Auto,
    /// Everything in fp32.
    F32,
    /// Matrix products and attention in bf16 under autocast; weights, optimizer state, norms,
    /// softmaxes, pooling and losses stay in fp32.
    Bf16,
    /// The encoder's linear projections in int8 on a CPU (weights per row, activations per
    /// token); everything else in fp32. For serving and evaluation only: it has no gradients.
    Int8,
}

/// As the CLI spells it: auto, f32, bf16 or int8.
impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s.trim() {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("{other:?}: expected auto, f32, bf16 or int8")),
        }
    }
}

/// As the CLI spells it.
impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl Precision {
    /// Whether a model on `device` runs its encoder under bf16 autocast.
    pub fn bf16_on(self, device: Device) -> bool {
        match self {
            Precision::Auto => device.is_cuda(),
            Precision::F32 | Precision::Int8 => false,
            Precision::Bf16 => true,
        }
    }

    /// What a server that serves in this precision fine-tunes in: int8 only scores, so its
    /// fine-tunes train as `auto` would.
    pub fn for_serving_trainer(self) -> Precision {
        match self {
            Precision::Int8 => Precision::Auto,
            p => p,
        }
    }

    /// The precision a fine-tune runs in: this one, or an error for int8, which only scores.
    pub fn training(self) -> Result<Precision, ModelError> {
        match self {
            Precision::Int8 => Err(ModelError::Invalid(
                "--precision int8 serves and evaluates only: its projections have no gradients; \
                 fine-tune with --precision auto, f32 or bf16 and serve the result in int8"
                    .into(),
            )),
            p => Ok(p),
        }
    }
}

mod aten {
    extern "C" {
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device: i8) -> bool;
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device: i8) -> i8;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
}

/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

/// `c10::DeviceType::CPU` and `CUDA`.
fn device_type(device: Device) -> i8 {
    if device.is_cuda() {
        1
    } else {
        0
    }
}

/// Restores the thread's autocast state when the region ends, even by a panic.
struct Region {
    device: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: see the module comment; these only touch this thread's autocast state.
        unsafe {
            // The cache holds bf16 copies of the weights, stale after the next optimizer step.
            if aten::decrement_nesting() == 0 {
                aten::clear_cache();
            }
            aten::set_autocast_enabled(self.device, self.was_enabled);
            aten::set_autocast_dtype(self.device, self.was_dtype);
        }
    }
}

/// Runs `f` with autocast on for `device` at bf16, as `torch.autocast(device, torch.bfloat16)`
/// does. Run backward outside the region, as PyTorch advises; autograd casts the gradients back.
pub(crate) fn bf16_autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    let device = device_type(device);
    // SAFETY: see the module comment.
    let _region = unsafe {
        let region = Region {
            device,
            was_enabled: aten::is_autocast_enabled(device),
            was_dtype: aten::get_autocast_dtype(device),
        };
        aten::set_autocast_dtype(device, BFLOAT16);
        aten::set_autocast_enabled(device, true);
        aten::increment_nesting();
        region
    };
    f()
}

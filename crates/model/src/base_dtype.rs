//! bf16 base weights for LoRA: a LoRA run trains only its adapters (and a cross-encoder's head),
//! so the frozen weights of the projections it adapts, most of a model, can be held in bf16,
//! half their fp32 memory, while the adapters, the head and the optimizer's state stay fp32.
//!
//! Under bf16 autocast this changes nothing the model computes: autocast casts an fp32 weight
//! to bf16 for each matrix product anyway, rounding it as storing it in bf16 does. So it is
//! allowed only there; without autocast a bf16 weight would meet an fp32 input. Saving merged
//! folds the adapters into the checkpoint's own weights, read again from disk, not into their
//! bf16 copies.
use std::collections::HashMap;

use tch::{nn, Device, Kind as DType, Tensor};

use crate::{checkpoint, lora, Model, ModelError};

/// How a LoRA model holds the frozen weights of the projections it adapts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BaseDtype {
    /// bf16 when training LoRA adapters on a GPU under bf16 autocast (the default there), fp32
    /// elsewhere, and always for a model loaded to serve.
    #[default]
    Auto,
    F32,
    /// Needs LoRA and bf16 arithmetic (`Precision::Bf16`, or `Auto` on a GPU).
    Bf16,
}

impl BaseDtype {
    /// Whether a model loaded to train fresh LoRA adapters (`lora`) or not, on `device`, under
    /// bf16 autocast or not, holds its adapted projections' weights in bf16. A model loaded to
    /// serve keeps them as loaded: adapters served over one base share its tensors.
    pub(crate) fn bf16_on(
        self,
        lora: bool,
        autocast: bool,
        device: Device,
    ) -> Result<bool, ModelError> {
        match self {
            BaseDtype::Auto => Ok(lora && autocast && device.is_cuda()),
            BaseDtype::F32 => Ok(false),
            BaseDtype::Bf16 if !lora => Err(ModelError::Invalid(
                "bf16 base weights are for LoRA, whose base is frozen: set a LoRA rank \
                 (--lora-rank), or keep --base-dtype f32"
                    .into(),
            )),
            BaseDtype::Bf16 if !autocast => Err(ModelError::Invalid(
                "bf16 base weights need bf16 arithmetic: add --precision bf16 (the default on a \
                 GPU), or keep --base-dtype f32"
                    .into(),
            )),
            BaseDtype::Bf16 => Ok(true),
        }
    }
}

/// Converts the frozen weight of every adapted projection in `vs` to bf16 in place: the network
/// holds the same tensors, which now keep bf16 data.
pub(crate) fn to_bf16(vs: &nn::VarStore) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for module in lora::adapted_modules(vs) {
            if let Some(weight) = vars.get(&format!("{module}.weight")) {
                if !weight.requires_grad() {
                    let mut held = weight.shallow_clone();
                    held.set_data(&weight.to_kind(DType::BFloat16));
                }
            }
        }
    });
}

/// The checkpoint's own values of the weights `model` holds in bf16, by name: what saving merged
/// folds the adapters into. Empty when it holds none, or when the checkpoint itself is bf16 (its
/// values are then the ones held).
pub(crate) fn originals(
    model: &Model,
    vars: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let held: Vec<&String> = vars
        .iter()
        .filter(|(_, t)| t.kind() == DType::BFloat16)
        .map(|(n, _)| n)
        .collect();
    if held.is_empty() || model.dtype == DType::BFloat16 {
        return Ok(HashMap::new());
    }
    let path = model.source.join("model.safetensors");
    let mut file: HashMap<String, Tensor> = Tensor::read_safetensors(&path)?.into_iter().collect();
    let family = model.config.family();
    held.into_iter()
        .map(|name| match checkpoint::take(&mut file, family, name) {
            Some(t) => Ok((name.clone(), t)),
            None => Err(ModelError::Invalid(format!(
                "{}: tensor {name} is gone; the base checkpoint changed while the model trained",
                path.display()
            ))),
        })
        .collect()
}

//! Not implemented yet: refused with a clear error.
use tch::{nn, Tensor};

use super::{unsupported, Network};
use crate::config::Config;
use crate::ModelError;

pub(super) struct ModernBert;

impl ModernBert {
    pub(super) fn new(
        _root: &nn::Path,
        _encoder: nn::Path,
        cfg: &Config,
        _head: Option<nn::LinearConfig>,
    ) -> Result<ModernBert, ModelError> {
        Err(unsupported(
            cfg,
            "model_type",
            &cfg.model_type,
            "this family soon",
        ))
    }
}

impl Network for ModernBert {
    fn encode(&self, _ids: &Tensor, _type_ids: &Tensor, _mask: &Tensor, _train: bool) -> Tensor {
        unreachable!()
    }
    fn classify(&self, _hidden: &Tensor, _mask: &Tensor, _train: bool) -> Tensor {
        unreachable!()
    }
    fn max_tokens(&self) -> usize {
        unreachable!()
    }
}

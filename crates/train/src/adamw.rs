//! AdamW and gradient clipping, written out in tensor ops over state this crate owns.
//!
//! tch's `nn::Optimizer` wraps libtorch's C++ AdamW, which keeps each parameter's moments and step
//! count out of reach: a run could not save them, so it could not resume. This is the same
//! update, in the order of operations of libtorch's `torch::optim::AdamW::step` (decoupled weight
//! decay, the moment updates, bias correction; they agree to float rounding), and the same
//! clipping as tch's `clip_grad_norm`, with the state open to [`AdamW::state`] and
//! [`AdamW::restore`].
use std::collections::{BTreeMap, HashMap};

use tch::{nn, Tensor};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// One parameter's state, created at its first step with a gradient, as libtorch does.
struct Moments {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub(crate) struct AdamW {
    /// The trainable tensors by name, in name order, which fixes the order the clipping norm sums in.
    params: Vec<(String, Tensor)>,
    moments: HashMap<String, Moments>,
    weight_decay: f64,
}

/// The names a parameter's moments have among the saved tensors.
fn moment_names(param: &str) -> [String; 2] {
    [format!("exp_avg.{param}"), format!("exp_avg_sq.{param}")]
}

impl AdamW {
    /// libtorch's defaults (betas 0.9 and 0.999, eps 1e-8) with `weight_decay`.
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> AdamW {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        AdamW {
            params,
            moments: HashMap::new(),
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so that their global L2 norm is at most `max`.
    pub fn clip_grad_norm(&self, max: f64) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return;
            }
            let norms: Vec<Tensor> = grads.iter().map(Tensor::norm).collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        })
    }

    /// One update at learning rate `lr` of every parameter that has a gradient.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                if self.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let m = self.moments.entry(name.clone()).or_insert_with(|| Moments {
                    step: 0,
                    exp_avg: p.zeros_like(),
                    exp_avg_sq: p.zeros_like(),
                });
                m.step += 1;
                let bias_correction1 = 1.0 - BETA1.powf(m.step as f64);
                let bias_correction2 = 1.0 - BETA2.powf(m.step as f64);
                let _ = m
                    .exp_avg
                    .g_mul_scalar_(BETA1)
                    .g_add_(&grad.g_mul_scalar(1.0 - BETA1));
                let _ = m
                    .exp_avg_sq
                    .g_mul_scalar_(BETA2)
                    .g_add_(&(grad.g_mul_scalar(1.0 - BETA2) * &grad));
                let denom = (m.exp_avg_sq.sqrt() / bias_correction2.sqrt()).g_add_scalar_(EPS);
                let step_size = lr / bias_correction1;
                let _ = p.g_add_(&(m.exp_avg.g_mul_scalar(-step_size) / denom));
            }
        })
    }

    /// Zero tensors as large as the moments the next step creates (those of the parameters that
    /// have none yet): for the fit check to hold that memory through its trial step.
    pub fn first_step_moments(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .filter(|(name, _)| !self.moments.contains_key(name))
            .flat_map(|(_, p)| [p.zeros_like(), p.zeros_like()])
            .collect()
    }

    /// The moments as named tensors, and each parameter's step count, for a resume state.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, u64>) {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for (name, m) in &self.moments {
            let [avg, avg_sq] = moment_names(name);
            tensors.push((avg, m.exp_avg.shallow_clone()));
            tensors.push((avg_sq, m.exp_avg_sq.shallow_clone()));
            steps.insert(name.clone(), m.step);
        }
        (tensors, steps)
    }

    /// Takes back a state that [`AdamW::state`] gave, each moment on its parameter's device.
    pub fn restore(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        steps: &BTreeMap<String, u64>,
    ) -> Result<(), String> {
        self.moments.clear();
        for (name, &step) in steps {
            let p = self
                .params
                .iter()
                .find_map(|(n, p)| (n == name).then_some(p))
                .ok_or_else(|| format!("optimizer state for {name}, which the model lacks"))?;
            let [exp_avg, exp_avg_sq] = moment_names(name).map(|n| {
                tensors
                    .remove(&n)
                    .filter(|t| t.size() == p.size() && t.kind() == p.kind())
                    .map(|t| t.to_device(p.device()))
                    .ok_or_else(|| format!("optimizer state {n}: missing or not shaped as {name}"))
            });
            let m = Moments {
                step,
                exp_avg: exp_avg?,
                exp_avg_sq: exp_avg_sq?,
            };
            self.moments.insert(name.clone(), m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::{Device, Kind};

    /// Two parameters in a fresh store, seeded, and an input for a loss whose gradient is large
    /// enough to clip. The draws hold the process's generator: tests run side by side, and one
    /// reseeding it between another's draws gave two "identical" stores different weights.
    fn store(seed: u64) -> (nn::VarStore, Tensor) {
        finerank_model::seeded(seed, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let _ = vs.root().randn("w", &[64, 33], 0.0, 1.0);
            let _ = vs.root().randn("b", &[33], 0.0, 1.0);
            let x = Tensor::randn([16, 64], (Kind::Float, Device::Cpu));
            (vs, x)
        })
    }

    fn loss(vs: &nn::VarStore, x: &Tensor) -> Tensor {
        let v = vs.variables();
        (x.matmul(&v["w"]) + &v["b"])
            .tanh()
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
            * 10.0
    }

    /// The same ten steps, with clipping and a changing rate, under libtorch's own AdamW and
    /// under this one: the weights agree to float rounding, not bit for bit (libtorch's
    /// `add_(grad, 1 - beta1)` takes a scale tch cannot pass, so here it is a multiply, then an
    /// add).
    #[test]
    fn matches_libtorchs_adamw() {
        let (theirs_vs, x) = store(3);
        let (ours_vs, _) = store(3);
        let mut theirs = nn::AdamW {
            wd: 0.01,
            ..Default::default()
        }
        .build(&theirs_vs, 1e-2)
        .unwrap();
        let mut ours = AdamW::new(&ours_vs, 0.01);
        for step in 0..10 {
            let lr = 1e-2 * (step + 1) as f64 / 10.0;
            theirs.set_lr(lr);
            theirs.zero_grad();
            loss(&theirs_vs, &x).backward();
            theirs.clip_grad_norm(1.0);
            theirs.step();
            ours.zero_grad();
            loss(&ours_vs, &x).backward();
            ours.clip_grad_norm(1.0);
            ours.step(lr);
        }
        for (name, a) in theirs_vs.variables() {
            let b = &ours_vs.variables()[&name];
            let diff = (&a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: {diff}");
        }
    }

    /// Saving the state after three steps and restoring it into a fresh optimizer over the same
    /// weights gives the fourth step bit for bit.
    #[test]
    fn a_restored_state_steps_exactly_as_the_original() {
        let (vs, x) = store(5);
        let mut opt = AdamW::new(&vs, 0.01);
        let step = |opt: &mut AdamW| {
            opt.zero_grad();
            loss(&vs, &x).backward();
            opt.clip_grad_norm(1.0);
            opt.step(1e-2);
        };
        for _ in 0..3 {
            step(&mut opt);
        }
        let (tensors, steps) = opt.state();
        let saved: HashMap<String, Tensor> =
            tensors.into_iter().map(|(n, t)| (n, t.copy())).collect();
        let before: HashMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        step(&mut opt);
        let original: HashMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();

        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                v.copy_(&before[&name]);
            }
        });
        let mut fresh = AdamW::new(&vs, 0.01);
        fresh.restore(saved, &steps).unwrap();
        step(&mut fresh);
        for (name, v) in vs.variables() {
            assert!(v.equal(&original[&name]), "{name}");
        }
    }
}

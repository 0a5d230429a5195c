//! AdamW exactly as `torch.optim.AdamW` computes it (decoupled weight decay applied to every
//! trainable parameter in the graph, bias-corrected moments), over the model's named
//! parameters, from gradients collected by key ([`ParamGrads`]). Parameters that received no
//! gradient (`None`, not in the graph) are left untouched, as PyTorch does; parameters with an
//! all-zero gradient still decay.

use std::collections::BTreeMap;

use burn::tensor::Gradients;

use super::config::OptimizerConfig;
use super::nn::{AnyTensor, Kind, Slot, Visitor};
use super::sam4em::Sam4em;

/// First and second moment of one parameter.
#[derive(Clone, Debug)]
struct Moments {
    m: AnyTensor,
    v: AnyTensor,
    step: u64,
}

/// The optimiser and its per-parameter state.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Hyper-parameters (the learning rate can be changed between steps).
    pub config: OptimizerConfig,
    state: BTreeMap<String, Moments>,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Parameters updated.
    pub updated: Vec<String>,
    /// Trainable parameters that had no gradient (not in the graph) and were left as they are.
    pub without_gradient: Vec<String>,
}

/// Marks every trainable parameter of `model` as requiring a gradient (the model must live on
/// an autodiff device) and every frozen one as not.
pub fn prepare_for_training(model: &mut Sam4em) {
    struct Mark;
    impl Visitor for Mark {
        fn visit(&mut self, key: &str, kind: Kind, mut slot: Slot<'_>) {
            let train = kind == Kind::Param && Sam4em::is_trainable(key);
            slot.map_any(&mut |t| match t {
                AnyTensor::T1(t) => AnyTensor::T1(t.detach().set_require_grad(train)),
                AnyTensor::T2(t) => AnyTensor::T2(t.detach().set_require_grad(train)),
                AnyTensor::T3(t) => AnyTensor::T3(t.detach().set_require_grad(train)),
                AnyTensor::T4(t) => AnyTensor::T4(t.detach().set_require_grad(train)),
            });
        }
    }
    model.visit(&mut Mark);
}

/// Gradients of one model's trainable parameters by key (burn layout), summed over one or more
/// backward passes: a recomputing training step runs one backward pass per piece of the model
/// (`model::backprop`), and each parameter's gradient is the sum of what those passes give.
#[derive(Clone, Debug, Default)]
pub struct ParamGrads {
    grads: BTreeMap<String, AnyTensor>,
}

impl ParamGrads {
    /// No gradients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients `grads` holds for the trainable parameters that `walk` lists and
    /// `keep` accepts (by key) to those collected so far.
    pub fn add(&mut self, grads: &Gradients, keep: &dyn Fn(&str) -> bool, walk: impl FnOnce(&mut dyn Visitor)) {
        struct Add<'a> {
            into: &'a mut BTreeMap<String, AnyTensor>,
            grads: &'a Gradients,
            keep: &'a dyn Fn(&str) -> bool,
        }
        impl Visitor for Add<'_> {
            fn visit(&mut self, key: &str, kind: Kind, mut slot: Slot<'_>) {
                if kind != Kind::Param || !Sam4em::is_trainable(key) || !(self.keep)(key) {
                    return;
                }
                let grads = self.grads;
                let mut found = None;
                slot.map_any(&mut |t| {
                    found = match &t {
                        AnyTensor::T1(p) => p.grad(grads).map(AnyTensor::T1),
                        AnyTensor::T2(p) => p.grad(grads).map(AnyTensor::T2),
                        AnyTensor::T3(p) => p.grad(grads).map(AnyTensor::T3),
                        AnyTensor::T4(p) => p.grad(grads).map(AnyTensor::T4),
                    };
                    t
                });
                let Some(g) = found else { return };
                let sum = match (self.into.remove(key), g) {
                    (None, g) => g,
                    (Some(AnyTensor::T1(a)), AnyTensor::T1(b)) => AnyTensor::T1(a + b),
                    (Some(AnyTensor::T2(a)), AnyTensor::T2(b)) => AnyTensor::T2(a + b),
                    (Some(AnyTensor::T3(a)), AnyTensor::T3(b)) => AnyTensor::T3(a + b),
                    (Some(AnyTensor::T4(a)), AnyTensor::T4(b)) => AnyTensor::T4(a + b),
                    (Some(a), b) => panic!("gradient of {key} changed rank between passes: {a:?} then {b:?}"),
                };
                self.into.insert(key.to_string(), sum);
            }
        }
        walk(&mut Add { into: &mut self.grads, grads, keep });
    }

    /// Every trainable parameter of `model` that has a gradient in `grads` (one backward pass
    /// over the whole model).
    pub fn from_model(model: &mut Sam4em, grads: &Gradients, keep: &dyn Fn(&str) -> bool) -> Self {
        let mut g = Self::new();
        g.add(grads, keep, |v| model.visit(v));
        g
    }

    /// The gradient of parameter `key`, if it got one.
    pub fn get(&self, key: &str) -> Option<&AnyTensor> {
        self.grads.get(key)
    }

    /// Parameters with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

macro_rules! adamw_update {
    ($p:expr, $g:expr, $mom:expr, $variant:ident, $c:expr) => {{
        let (p, g) = ($p, $g);
        let (m, v) = match ($mom.m.clone(), $mom.v.clone()) {
            (AnyTensor::$variant(m), AnyTensor::$variant(v)) => (m, v),
            _ => (g.zeros_like(), g.zeros_like()),
        };
        let (b1, b2) = ($c.betas[0], $c.betas[1]);
        let m = m * b1 + g.clone() * (1.0 - b1);
        let v = v * b2 + g.clone() * g * (1.0 - b2);
        let t = $mom.step as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let p = p.detach() * (1.0 - $c.lr * $c.weight_decay);
        let denom = v.clone().sqrt() / bc2.sqrt() + $c.eps;
        let p = p - m.clone() / denom * ($c.lr / bc1);
        $mom.m = AnyTensor::$variant(m);
        $mom.v = AnyTensor::$variant(v);
        AnyTensor::$variant(p.detach().require_grad())
    }};
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(config: OptimizerConfig) -> Self {
        AdamW { config, state: BTreeMap::new() }
    }

    /// One step over every trainable parameter of `model` that has a gradient in `grads`. The
    /// new values are detached leaves that require gradients again.
    pub fn step(&mut self, model: &mut Sam4em, grads: &ParamGrads) -> StepReport {
        struct Step<'a> {
            opt: &'a mut AdamW,
            grads: &'a ParamGrads,
            report: StepReport,
        }
        impl Visitor for Step<'_> {
            fn visit(&mut self, key: &str, kind: Kind, mut slot: Slot<'_>) {
                if kind != Kind::Param || !Sam4em::is_trainable(key) {
                    return;
                }
                let Some(grad) = self.grads.get(key) else {
                    self.report.without_gradient.push(key.to_string());
                    return;
                };
                let c = self.opt.config.clone();
                let state = &mut self.opt.state;
                slot.map_any(&mut |t| {
                    let mom = state.entry(key.to_string()).or_insert_with(|| Moments {
                        m: zeros_like(&t),
                        v: zeros_like(&t),
                        step: 0,
                    });
                    mom.step += 1;
                    match (t, grad.clone()) {
                        (AnyTensor::T1(p), AnyTensor::T1(g)) => adamw_update!(p, g, mom, T1, c),
                        (AnyTensor::T2(p), AnyTensor::T2(g)) => adamw_update!(p, g, mom, T2, c),
                        (AnyTensor::T3(p), AnyTensor::T3(g)) => adamw_update!(p, g, mom, T3, c),
                        (AnyTensor::T4(p), AnyTensor::T4(g)) => adamw_update!(p, g, mom, T4, c),
                        (p, g) => panic!("gradient of {key} has another rank than the parameter: {g:?} for {p:?}"),
                    }
                });
                self.report.updated.push(key.to_string());
            }
        }
        let mut s = Step { opt: self, grads, report: StepReport::default() };
        model.visit(&mut s);
        s.report
    }
}

fn zeros_like(t: &AnyTensor) -> AnyTensor {
    match t {
        AnyTensor::T1(t) => AnyTensor::T1(t.zeros_like().detach()),
        AnyTensor::T2(t) => AnyTensor::T2(t.zeros_like().detach()),
        AnyTensor::T3(t) => AnyTensor::T3(t.zeros_like().detach()),
        AnyTensor::T4(t) => AnyTensor::T4(t.zeros_like().detach()),
    }
}

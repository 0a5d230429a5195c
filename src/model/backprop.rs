//! The loss and gradients of one training batch, computed in one of two ways that give the
//! same numbers:
//!
//! - [`Activations::Keep`]: one autodiff graph over the whole batch (encoder, fusion head,
//!   every class's decode loop, loss) and one backward pass. Every activation the backward
//!   pass needs stays alive until it runs: for Hiera-B+ at 512², about 4 GiB per slice and class.
//! - [`Activations::Recompute`]: block-level recomputation ("gradient checkpointing"). A first
//!   pass runs the whole batch forward without autodiff, keeping only each Hiera block's input,
//!   the fused features, and each class's prompts and logits. The loss is differentiated with
//!   respect to the logits alone. Then the model is walked backwards piece by piece: each
//!   (class, slice) decode, the neck and fusion head, and each Hiera block in reverse order is
//!   run again from its kept input with autodiff, and back-propagated on its own with the
//!   gradient of its output, `∂L/∂input = backward(Σ output ⊙ ∂L/∂output)`. Only one piece's
//!   activations are alive at a time, so memory grows with the batch only through the kept
//!   inputs (about 80 MB per slice for B+), at the price of one more forward pass.
//!
//! The decomposition is exact: each piece's output gradient is what the whole graph would
//! send it, and parameter gradients are summed over the pieces that use them. Nothing crosses
//! slices through the slice memory (its update is detached, as in the reference) and the next
//! slice's prompt is a thresholded, detached mask, so a slice's decode depends on the batch only
//! through its own fused features. The fusion head's BatchNorm uses statistics of the whole
//! batch, so the neck and fusion head form one piece; its running statistics are updated once,
//! by the recomputation. `tests/model/model_golden.rs` checks both ways against the reference's
//! gradients.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::memory::MemoryState;
use super::multi::{MultiModel, is_shared};
use super::nn::key;
use super::optim::ParamGrads;
use super::sam4em::logit;

/// How a training step's backward pass gets the activations it needs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activations {
    /// One graph over the whole batch; every activation is kept until the backward pass.
    Keep,
    /// Block-level recomputation: only block inputs are kept; each piece of the model is run
    /// again, and back-propagated on its own, when its gradient is needed.
    Recompute,
}

impl Activations {
    /// Lower-case name (CLI, reports).
    pub fn name(self) -> &'static str {
        match self {
            Activations::Keep => "keep",
            Activations::Recompute => "recompute",
        }
    }
}

/// The loss of one class over a batch: `(class, logits1, logits2)` with logits `[B, 1, S, S]`
/// → a scalar `[1]`, or `None` when the class has nothing to learn from in this batch.
pub type ClassLoss<'a> = dyn FnMut(usize, Tensor<4>, Tensor<4>) -> Option<Tensor<1>> + 'a;

/// Gradients of a [`MultiModel`]'s trainable parameters: the shared encoder side (LoRA,
/// fusion head) and each class's heads.
#[derive(Clone, Debug, Default)]
pub struct ModelGrads {
    /// Shared encoder-side parameters.
    pub encoder: ParamGrads,
    /// Per class, its heads' parameters.
    pub heads: Vec<ParamGrads>,
}

/// What one batch gave.
#[derive(Clone, Debug)]
pub struct BatchStep {
    /// The summed loss of the classes that had one (`None`: no class had anything to learn).
    pub loss: Option<f64>,
    /// The gradients; `None` when there was no loss or it was not finite (nothing to step).
    pub grads: Option<ModelGrads>,
    /// Per class, the stage-1 and stage-2 logits `[B, 1, S, S]` (detached).
    pub logits: Vec<(Tensor<4>, Tensor<4>)>,
    /// Per class, the prompt for the first slice of the next batch `[1, 1, S, S]`.
    pub next_prompts: Vec<Tensor<4>>,
}

/// The reference's training forward for a batch of consecutive slices (see
/// [`MultiModel::forward_train`]), its loss and the gradients of every trainable parameter.
/// `memories` advance through the batch as in the forward pass; the fusion head's BatchNorm
/// running statistics are updated once.
///
/// # Shapes
/// `x [B, 3, S, S]`, each prompt `[1, 1, S, S]`.
pub fn batch_gradients(
    model: &mut MultiModel,
    x: Tensor<4>,
    prompts: Vec<Tensor<4>>,
    memories: &mut [MemoryState],
    activations: Activations,
    loss: &mut ClassLoss<'_>,
) -> BatchStep {
    match activations {
        Activations::Keep => keep_all(model, x, prompts, memories, loss),
        Activations::Recompute => recompute(model, x, prompts, memories, loss),
    }
}

fn keep_all(
    model: &mut MultiModel,
    x: Tensor<4>,
    prompts: Vec<Tensor<4>>,
    memories: &mut [MemoryState],
    loss: &mut ClassLoss<'_>,
) -> BatchStep {
    let outs = model.forward_train(x, prompts, memories);
    let logits: Vec<(Tensor<4>, Tensor<4>)> =
        outs.iter().map(|o| (o.logits1.clone().detach(), o.logits2.clone().detach())).collect();
    let (pairs, next_prompts): (Vec<_>, Vec<_>) =
        outs.into_iter().map(|o| ((o.logits1, o.logits2), o.next_prompt)).unzip();
    let Some((total, value)) = summed_loss(pairs, loss) else {
        return BatchStep { loss: None, grads: None, logits, next_prompts };
    };
    if !value.is_finite() {
        return BatchStep { loss: Some(value), grads: None, logits, next_prompts };
    }
    let g = total.backward();
    let grads = ModelGrads {
        encoder: ParamGrads::from_model(&mut model.encoder, &g, &is_shared),
        heads: model.heads.iter_mut().map(|h| ParamGrads::from_model(&mut h.model, &g, &|k| !is_shared(k))).collect(),
    };
    BatchStep { loss: Some(value), grads: Some(grads), logits, next_prompts }
}

/// The sum of the losses of the classes that have one (each class's logits in `pairs`, in
/// class order) and its value; `None` when no class has one.
fn summed_loss(pairs: Vec<(Tensor<4>, Tensor<4>)>, loss: &mut ClassLoss<'_>) -> Option<(Tensor<1>, f64)> {
    let total = pairs.into_iter().enumerate().filter_map(|(c, (l1, l2))| loss(c, l1, l2)).reduce(|a, b| a + b)?;
    let value = f64::from(total.clone().into_scalar::<f32>());
    Some((total, value))
}

/// `t` on the autodiff device as a leaf whose gradient is kept.
fn leaf<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone().autodiff().require_grad()
}

/// `Σ output ⊙ grad`: back-propagating it sends exactly `grad` into `output`.
fn surrogate<const D: usize>(output: Tensor<D>, grad: Tensor<D>) -> Tensor<1> {
    (output * grad).sum()
}

fn add<const D: usize>(a: Option<Tensor<D>>, b: Tensor<D>) -> Tensor<D> {
    match a {
        Some(a) => a + b,
        None => b,
    }
}

fn recompute(
    model: &mut MultiModel,
    x: Tensor<4>,
    prompts: Vec<Tensor<4>>,
    memories: &mut [MemoryState],
    loss: &mut ClassLoss<'_>,
) -> BatchStep {
    let classes = model.heads.len();
    let b = x.dims()[0];
    let threshold = logit(model.config().stream.intra_batch_threshold);
    let stage_ends = model.config().hiera.stage_ends();

    // Pass 1, forward only, no autodiff: keep each block's input and what the decoders need.
    let plain = model.without_autodiff();
    let trunk = &plain.encoder.trunk;
    let mut block_inputs = Vec::with_capacity(trunk.blocks.len());
    let mut stages = Vec::with_capacity(stage_ends.len());
    let mut h = trunk.patch_input(x.inner(), &mut |_, _| {});
    for (i, block) in trunk.blocks.iter().enumerate() {
        block_inputs.push(h.clone());
        h = block.forward(h);
        if stage_ends.contains(&i) {
            stages.push(h.clone().permute([0, 3, 1, 2]));
        }
    }
    drop(h);
    // The copy's running statistics move and are thrown away with it; the recomputation
    // below moves the model's own, once.
    let fused = plain.encoder.clone().fuse_train(&stages);
    let mut slice_prompts: Vec<Vec<Tensor<4>>> = Vec::with_capacity(classes);
    let mut logits = Vec::with_capacity(classes);
    let mut next_prompts = Vec::with_capacity(classes);
    let start_memories: Vec<MemoryState> = memories.to_vec();
    for (c, head) in plain.heads.iter().enumerate() {
        let mut prompt = prompts[c].clone().inner();
        let mut memory = MemoryState { memory: memories[c].memory.clone().inner() };
        let (mut l1, mut l2, mut used) = (Vec::with_capacity(b), Vec::with_capacity(b), Vec::with_capacity(b));
        for i in 0..b {
            used.push(prompt.clone());
            let (out, next) = head.model.decode(fused.clone().narrow(0, i, 1), prompt, &memory);
            memory = next;
            prompt = out.logits2.clone().greater_elem(threshold).float();
            l1.push(out.logits1);
            l2.push(out.logits2);
        }
        next_prompts.push(head.model.predict_mask(l1[b - 1].clone(), l2[b - 1].clone()));
        memories[c] = MemoryState { memory: memory.memory.autodiff() };
        logits.push((Tensor::cat(l1, 0), Tensor::cat(l2, 0)));
        slice_prompts.push(used);
    }
    drop(plain);

    // The loss, differentiated with respect to the logits only.
    let leaves: Vec<(Tensor<4>, Tensor<4>)> = logits.iter().map(|(l1, l2)| (leaf(l1), leaf(l2))).collect();
    let Some((total, value)) = summed_loss(leaves.clone(), loss) else {
        return BatchStep { loss: None, grads: None, logits, next_prompts };
    };
    if !value.is_finite() {
        return BatchStep { loss: Some(value), grads: None, logits, next_prompts };
    }
    let g = total.backward();
    let logit_grads: Vec<Option<(Tensor<4>, Tensor<4>)>> =
        leaves.iter().map(|(l1, l2)| l1.grad(&g).zip(l2.grad(&g))).collect();
    drop((g, leaves));

    // Pass 2, backwards through the pieces. Each class's decode loop, slice by slice (the
    // memory is carried forward again; no gradient flows through it).
    let mut grads = ModelGrads { encoder: ParamGrads::new(), heads: vec![ParamGrads::new(); classes] };
    let mut fused_grads: Vec<Option<Tensor<4>>> = vec![None; b];
    for (c, class_grads) in logit_grads.into_iter().enumerate() {
        let Some((g1, g2)) = class_grads else { continue };
        let mut memory = start_memories[c].clone();
        for (i, prompt) in slice_prompts[c].iter().enumerate() {
            let features = leaf(&fused.clone().narrow(0, i, 1));
            let head = &mut model.heads[c].model;
            let (out, next) = head.decode(features.clone(), prompt.clone().autodiff(), &memory);
            memory = next;
            let s =
                surrogate(out.logits1, g1.clone().narrow(0, i, 1)) + surrogate(out.logits2, g2.clone().narrow(0, i, 1));
            let pass = s.backward();
            grads.heads[c].add(&pass, &|k| !is_shared(k), |v| head.visit(v));
            if let Some(gf) = features.grad(&pass) {
                fused_grads[i] = Some(add(fused_grads[i].take(), gf));
            }
        }
    }
    // A slice no class's loss reached has a zero gradient.
    let fused_grad = Tensor::cat(
        fused_grads
            .into_iter()
            .enumerate()
            .map(|(i, g)| g.unwrap_or_else(|| fused.clone().narrow(0, i, 1).zeros_like()))
            .collect(),
        0,
    );
    drop(fused);

    // The neck and the fusion head (BatchNorm couples the batch: one piece).
    let stage_leaves: Vec<Tensor<4>> = stages.iter().map(leaf).collect();
    drop(stages);
    let fused_again = model.encoder.fuse_train(&stage_leaves);
    let pass = surrogate(fused_again, fused_grad).backward();
    grads.encoder.add(&pass, &is_shared, |v| model.encoder.fusion.visit("fpn", v));
    let mut stage_grads: Vec<Option<Tensor<4>>> = stage_leaves.iter().map(|s| s.grad(&pass)).collect();
    drop((pass, stage_leaves));

    // The trunk, block by block from the last; each block's input is dropped once used.
    let mut output_grad: Option<Tensor<4>> = None;
    for k in (0..block_inputs.len()).rev() {
        let input = block_inputs.pop().expect("one input per block");
        if let Some(s) = stage_ends.iter().position(|&e| e == k)
            && let Some(gs) = stage_grads[s].take()
        {
            output_grad = Some(add(output_grad, gs.permute([0, 2, 3, 1])));
        }
        let Some(grad) = output_grad.take() else { continue };
        // The first block's input comes from the frozen patch embedding: no gradient needed.
        let input = if k > 0 { leaf(&input) } else { input.autodiff() };
        let block = &mut model.encoder.trunk.blocks[k];
        let pass = surrogate(block.forward(input.clone()), grad).backward();
        grads.encoder.add(&pass, &is_shared, |v| block.visit(&key("image_encoder.trunk.blocks", &k.to_string()), v));
        output_grad = if k > 0 { input.grad(&pass) } else { None };
    }
    BatchStep { loss: Some(value), grads: Some(grads), logits, next_prompts }
}

//! candle-core src/backprop.rs `Tensor::backward` and candle-nn src/optim.rs `AdamW::step`, for
//! the ops the probe's GPT uses, with candle's statement order (what is created first, what a
//! `let` keeps alive to the end of the match arm). Runs in the current phase: the caller sets
//! Backward or Optimizer.

use super::record::{self, Scope};
use super::tensor::{sorted_nodes, Bin, Op, Un, T};
use crate::sim::timeline::Category;
use std::collections::HashMap;

/// The GradStore: tensor id → gradient.
pub struct Grads(pub HashMap<usize, T>);

impl Grads {
    /// `or_insert`: zeros of the tensor's shape on first use.
    fn or_insert(&mut self, t: &T) -> &mut T {
        self.0.entry(t.id()).or_insert_with(|| t.zeros_like())
    }
    /// `let s = grads.or_insert(t)?; *s = f(s)?;` — the old sum is dropped after the new exists.
    fn acc(&mut self, t: &T, f: impl FnOnce(&T) -> T) {
        let s = self.or_insert(t);
        let new = f(s);
        *s = new;
    }
}

/// The backward of a node runs in its module's scope: its temporaries and the gradients it
/// accumulates are named after the module, as gradients (the loss chain's stay logits).
fn grad_scope(s: &Scope) -> Scope {
    let category = match s.category {
        Category::Logits => Category::Logits,
        _ => Category::Gradients,
    };
    Scope::new(s.layer, s.module, category)
}

/// candle's `Tensor::backward`: nodes in reverse topological order, each node's gradient
/// removed from the store and its inputs' gradients accumulated out of place.
pub fn backward(loss: &T) -> Grads {
    let sorted = sorted_nodes(loss);
    let mut grads = Grads(HashMap::new());
    let outer = record::enter(grad_scope(&loss.0.scope));
    grads
        .0
        .insert(loss.id(), T::new(loss.dims(), loss.dt(), "ones")); // ones_like().contiguous()
    for node in sorted.iter() {
        if node.is_var() {
            continue;
        }
        record::enter(grad_scope(&node.0.scope));
        // `let grad = grads.remove(node); let grad = grad.detach();` — the removed tensor (and
        // whatever its op keeps) lives to the end of this iteration.
        let removed = grads.0.remove(&node.id()).expect("grad not populated");
        let grad = removed.detach();
        let Some(op) = &node.0.op else { continue };
        node_backward(&mut grads, node, op, grad);
    }
    record::enter(outer);
    grads
}

/// One node's backward, as candle's `backward` matches its op (candle-core 0.11.1
/// src/backprop.rs): each input's gradient made and accumulated out of place. `grad` is
/// dropped with the iteration that called this, as candle's is.
fn node_backward(grads: &mut Grads, node: &T, op: &Op, grad: T) {
    match op {
        Op::Binary(l, r, b) => binary_backward(grads, [l, r], *b, &grad),
        Op::WhereCond(pred, t, f) => {
            let zeros = grad.zeros_like();
            grads.or_insert(t);
            let tg = pred.where_cond(&grad, &zeros);
            grads.acc(t, |s| s.add(&tg));
            grads.or_insert(f);
            let fg = pred.where_cond(&zeros, &grad);
            grads.acc(f, |s| s.add(&fg));
        }
        Op::Gather(arg, idx) => grads.acc(arg, |s| s.indexed_add(idx, &grad)),
        Op::IndexSelect(arg, idx) => {
            grads.or_insert(arg);
            let idx = idx.contiguous();
            grads.acc(arg, |s| s.indexed_add(&idx, &grad));
        }
        Op::Matmul(l, r) => {
            let lg = grad.matmul(&r.t());
            grads.acc(l, |s| s.add(&lg));
            let rg = l.t().matmul(&grad);
            grads.acc(r, |s| s.add(&rg));
        }
        Op::Broadcast(arg) => broadcast_backward(grads, node, arg, &grad),
        Op::Sum(arg) => {
            let g = grad.broadcast_as(arg.dims());
            grads.acc(arg, |s| s.add(&g));
        }
        Op::Max(arg) => {
            let n = node.broadcast_as(arg.dims());
            let g = grad.broadcast_as(arg.dims());
            let g = n.cmp().to_dtype(grad.dt()).mul(&g);
            grads.acc(arg, |s| s.add(&g.broadcast_as(s.dims())));
        }
        Op::ToDType(arg) => grads.acc(arg, |s| s.add(&grad.to_dtype(arg.dt()))),
        Op::Copy(arg) => grads.acc(arg, |s| s.add(&grad)),
        Op::Affine(arg, mul) => {
            let ag = grad.affine(*mul);
            grads.acc(arg, |s| s.add(&ag));
        }
        Op::Unary(arg, Un::Log) => grads.acc(arg, |s| s.add(&grad.div(arg))),
        Op::Unary(arg, Un::Exp) => grads.acc(arg, |s| s.add(&grad.mul(node))),
        Op::Unary(arg, Un::Sqr) => {
            let ag = arg.mul(&grad).affine(2.0);
            grads.acc(arg, |s| s.add(&ag));
        }
        Op::Unary(arg, Un::Sqrt) => {
            let ag = grad.div(node).affine(0.5);
            grads.acc(arg, |s| s.add(&ag));
        }
        Op::Unary(arg, Un::GeluErf) => gelu_erf_backward(grads, arg, &grad),
        Op::Narrow(arg, d, start, len) => narrow_backward(grads, arg, (*d, *start, *len), &grad),
        Op::Reshape(arg) => {
            let ag = grad.reshape(arg.dims());
            grads.acc(arg, |s| s.add(&ag));
        }
        Op::Transpose(arg, a, b) => {
            let ag = grad.transpose(*a, *b);
            grads.acc(arg, |s| s.add(&ag));
        }
        Op::Cmp(_) => {}
        Op::Unary(_, u) => panic!("backward of {u:?} not replayed"),
        Op::Cat(..) | Op::Indexed3(..) => panic!("backward of cat/index_add not replayed"),
    }
}

/// `l op r`'s two gradients (add, sub, mul, div), each accumulated out of place.
fn binary_backward(grads: &mut Grads, [l, r]: [&T; 2], op: Bin, grad: &T) {
    match op {
        Bin::Add => {
            grads.acc(l, |s| s.add(grad));
            grads.acc(r, |s| s.add(grad));
        }
        Bin::Sub => {
            grads.acc(l, |s| s.add(grad));
            grads.acc(r, |s| s.sub(grad));
        }
        Bin::Mul => {
            let lg = grad.mul(r);
            grads.acc(l, |s| s.add(&lg));
            let rg = grad.mul(l);
            grads.acc(r, |s| s.add(&rg));
        }
        Bin::Div => {
            let lg = grad.div(r);
            grads.acc(l, |s| s.add(&lg));
            let rg = grad.mul(l).div(&r.unary(Un::Sqr));
            grads.acc(r, |s| s.sub(&rg));
        }
    }
}

/// NarrowBackward: zero pads on either side, cat with the gradient (the pads freed right
/// after the cat).
fn narrow_backward(grads: &mut Grads, arg: &T, (d, start, len): (usize, usize, usize), grad: &T) {
    let dims = arg.dims().to_vec();
    let pad = |n: usize| {
        let mut p = dims.clone();
        p[d] = n;
        T::new(&p, grad.dt(), "zeros")
    };
    let left = (start > 0).then(|| pad(start));
    let rest = dims[d] - start - len;
    let right = (rest > 0).then(|| pad(rest));
    // The pads are moved into the match that calls cat: freed right after it.
    let ag = {
        let parts: Vec<T> = left
            .into_iter()
            .chain([grad.clone()])
            .chain(right)
            .collect();
        if parts.len() == 1 {
            grad.clone()
        } else {
            T::cat(&parts, d)
        }
    };
    grads.acc(arg, |s| s.add(&ag));
}

/// A broadcast's gradient: summed over the broadcast dims, squeezed to the input's rank.
fn broadcast_backward(grads: &mut Grads, node: &T, arg: &T, grad: &T) {
    let left = node.rank() - arg.rank();
    let mut dims: Vec<usize> = (0..left).collect();
    for (d, (n, a)) in node.dims()[left..].iter().zip(arg.dims()).enumerate() {
        if n != a {
            dims.push(d + left);
        }
    }
    let mut ag = grad.sum_keepdim(&dims);
    for _ in 0..left {
        ag = ag.squeeze(0);
    }
    grads.acc(arg, |s| s.add(&ag.broadcast_as(s.dims())));
}

/// GELU (erf)'s gradient as candle computes it, op by op.
fn gelu_erf_backward(grads: &mut Grads, arg: &T, grad: &T) {
    grads.or_insert(arg);
    let nhs = arg.unary(Un::Sqr).unary(Un::Neg).affine(0.5);
    let sea = nhs.unary(Un::Exp).affine(0.398942).mul(arg);
    let ass = arg.affine(0.5);
    let ess = ass.unary(Un::Erf).affine(0.5);
    let gg = sea.affine(1.0).add(&ess);
    grads.acc(arg, |s| s.add(&grad.mul(&gg)));
}

/// candle-nn's AdamW: m and v created with the optimizer, every update out of place.
pub struct AdamW {
    pub vars: Vec<(T, T, T)>,
}

impl AdamW {
    pub fn new(vars: &[T]) -> AdamW {
        let vars = vars
            .iter()
            .map(|v| {
                let s = v.0.scope;
                let outer = record::enter(Scope::new(s.layer, s.module, Category::Optimizer));
                let m = T::var(v.dims(), v.dt(), "exp_avg");
                let m2 = T::var(v.dims(), v.dt(), "exp_avg_sq");
                record::enter(outer);
                (v.clone(), m, m2)
            })
            .collect();
        AdamW { vars }
    }

    pub fn step(&self, grads: &Grads) {
        for (theta, m, v) in &self.vars {
            if let Some(g) = grads.0.get(&theta.id()) {
                let s = theta.0.scope;
                let outer = record::enter(Scope::new(s.layer, s.module, Category::Optimizer));
                let next_m = m.affine(0.9).add(&g.affine(0.1));
                let next_v = v.affine(0.95).add(&g.unary(Un::Sqr).affine(0.05));
                let m_hat = next_m.affine(2.0);
                let v_hat = next_v.affine(2.0);
                let next_theta = theta.affine(0.99);
                let adjusted = m_hat.div(&v_hat.unary(Un::Sqrt).affine(1.0));
                let next_theta = next_theta.sub(&adjusted.affine(1e-3));
                // m.set / v.set / theta.set copy into the existing storages.
                drop((next_m, next_v, next_theta));
                record::enter(outer);
            }
        }
    }
}

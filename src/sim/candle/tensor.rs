//! Shape-only tensors with candle 0.11.1's ownership (candle-core src/tensor.rs): a storage is
//! freed when its last holder goes, a backprop op holds its inputs, views share storage. Each
//! storage is an `Engine` tensor: created by `record::alloc`, released when the `Rc` drops.

use super::record::{self, Scope};
use crate::sim::DType;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static NEXT_ID: Cell<usize> = const { Cell::new(0) };
}

struct Storage(Option<u32>);

impl Storage {
    fn new(what: &'static str, dims: &[usize], dt: DType) -> Rc<Storage> {
        Rc::new(Storage(record::alloc(what, dims, dt)))
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            record::free(id);
        }
    }
}

/// candle's integer dtypes carry no gradient.
pub fn is_int(dt: DType) -> bool {
    !matches!(dt, DType::F32 | DType::BF16 | DType::F16)
}

pub use super::nanogpt::{Bin, Un};

pub enum Op {
    Binary(T, T, Bin),
    Unary(T, Un),
    Affine(T, f64),
    Sum(T),
    Max(T),
    Cmp(T),
    Matmul(T, T),
    Reshape(T),
    Transpose(T, usize, usize),
    Broadcast(T),
    Narrow(T, usize, usize, usize),
    Copy(T),
    ToDType(T),
    WhereCond(T, T, T),
    Gather(T, T),
    IndexSelect(T, T),
    Cat(Vec<T>),
    Indexed3(T, T, T),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Binary(_, _, b) => match b {
                Bin::Add => "add",
                Bin::Sub => "sub",
                Bin::Mul => "mul",
                Bin::Div => "div",
            },
            Op::Unary(_, u) => match u {
                Un::Sqr => "sqr",
                Un::Sqrt => "sqrt",
                Un::Exp => "exp",
                Un::Log => "log",
                Un::Neg => "neg",
                Un::Erf => "erf",
                Un::GeluErf => "gelu",
            },
            Op::Affine(..) => "affine",
            Op::Sum(_) => "sum",
            Op::Max(_) => "max",
            Op::Cmp(_) => "cmp",
            Op::Matmul(..) => "matmul",
            Op::Reshape(_) => "reshape",
            Op::Transpose(..) => "transpose",
            Op::Broadcast(_) => "broadcast",
            Op::Narrow(..) => "narrow",
            Op::Copy(_) => "copy",
            Op::ToDType(_) => "to_dtype",
            Op::WhereCond(..) => "where_cond",
            Op::Gather(..) => "gather",
            Op::IndexSelect(..) => "index_select",
            Op::Cat(..) => "cat",
            Op::Indexed3(..) => "index_add",
        }
    }
}

pub struct Node {
    pub id: usize,
    pub dims: Vec<usize>,
    pub strides: Vec<usize>,
    pub dt: DType,
    storage: Rc<Storage>,
    pub op: Option<Op>,
    pub var: bool,
    /// The module that created it: names its gradients in the backward.
    pub scope: Scope,
}

#[derive(Clone)]
pub struct T(pub Rc<Node>);

fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

impl T {
    fn make(
        dims: Vec<usize>,
        strides: Vec<usize>,
        dt: DType,
        st: Rc<Storage>,
        op: Option<Op>,
    ) -> T {
        let id = NEXT_ID.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        T(Rc::new(Node {
            id,
            dims,
            strides,
            dt,
            storage: st,
            op,
            var: false,
            scope: record::scope(),
        }))
    }
    /// A fresh contiguous tensor; `op` is kept only if an input is tracked (BackpropOp::new).
    pub(super) fn fresh(dims: Vec<usize>, dt: DType, op: Option<Op>, inputs: &[&T]) -> T {
        let what = op.as_ref().map_or("zeros", Op::name);
        let st = Storage::new(what, &dims, dt);
        let op = op.filter(|_| inputs.iter().any(|t| t.tracked()));
        T::make(dims.clone(), contiguous_strides(&dims), dt, st, op)
    }
    /// A view: same storage, new layout, new id.
    fn view(&self, dims: Vec<usize>, strides: Vec<usize>, op: Op) -> T {
        let op = Some(op).filter(|_| self.tracked());
        T::make(dims, strides, self.0.dt, self.0.storage.clone(), op)
    }
    /// A fresh untracked tensor named `what` in the current scope.
    pub fn new(dims: &[usize], dt: DType, what: &'static str) -> T {
        let st = Storage::new(what, dims, dt);
        T::make(dims.to_vec(), contiguous_strides(dims), dt, st, None)
    }
    /// A trainable variable (a parameter, or AdamW's m and v).
    pub fn var(dims: &[usize], dt: DType, what: &'static str) -> T {
        let t = T::new(dims, dt, what);
        let n = Rc::try_unwrap(t.0).ok().unwrap();
        T(Rc::new(Node { var: true, ..n }))
    }
    pub fn id(&self) -> usize {
        self.0.id
    }
    pub fn dims(&self) -> &[usize] {
        &self.0.dims
    }
    pub fn dt(&self) -> DType {
        self.0.dt
    }
    pub fn tracked(&self) -> bool {
        self.0.var || self.0.op.is_some()
    }
    pub fn is_var(&self) -> bool {
        self.0.var
    }
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&s, &d) in self.0.strides.iter().zip(&self.0.dims).rev() {
            if d > 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }
    pub fn rank(&self) -> usize {
        self.0.dims.len()
    }

    pub fn reshape(&self, dims: &[usize]) -> T {
        if self.is_contiguous() {
            self.view(
                dims.to_vec(),
                contiguous_strides(dims),
                Op::Reshape(self.clone()),
            )
        } else {
            T::fresh(
                dims.to_vec(),
                self.dt(),
                Some(Op::Reshape(self.clone())),
                &[self],
            )
        }
    }
    pub fn squeeze(&self, d: usize) -> T {
        if self.dims()[d] != 1 {
            return self.clone();
        }
        let (mut dims, mut st) = (self.dims().to_vec(), self.0.strides.clone());
        dims.remove(d);
        st.remove(d);
        self.view(dims, st, Op::Reshape(self.clone()))
    }
    pub fn unsqueeze(&self, d: usize) -> T {
        let (mut dims, mut st) = (self.dims().to_vec(), self.0.strides.clone());
        let s = if d < st.len() { st[d] } else { 1 };
        dims.insert(d, 1);
        st.insert(d, s);
        self.view(dims, st, Op::Reshape(self.clone()))
    }
    pub fn transpose(&self, a: usize, b: usize) -> T {
        if a == b {
            return self.clone();
        }
        let (mut dims, mut st) = (self.dims().to_vec(), self.0.strides.clone());
        dims.swap(a, b);
        st.swap(a, b);
        self.view(dims, st, Op::Transpose(self.clone(), a, b))
    }
    pub fn t(&self) -> T {
        let r = self.rank();
        self.transpose(r - 2, r - 1)
    }
    pub fn narrow(&self, d: usize, start: usize, len: usize) -> T {
        if start == 0 && self.dims()[d] == len {
            return self.clone();
        }
        let mut dims = self.dims().to_vec();
        dims[d] = len;
        self.view(
            dims,
            self.0.strides.clone(),
            Op::Narrow(self.clone(), d, start, len),
        )
    }
    pub fn broadcast_as(&self, shape: &[usize]) -> T {
        let off = shape.len() - self.rank();
        let st = (0..shape.len())
            .map(|i| match i.checked_sub(off) {
                Some(j) if self.dims()[j] == shape[i] => self.0.strides[j],
                _ => 0,
            })
            .collect();
        self.view(shape.to_vec(), st, Op::Broadcast(self.clone()))
    }
    pub fn contiguous(&self) -> T {
        if self.is_contiguous() {
            return self.clone();
        }
        T::fresh(
            self.dims().to_vec(),
            self.dt(),
            Some(Op::Copy(self.clone())),
            &[self],
        )
    }
    pub fn detach(&self) -> T {
        if self.0.op.is_none() && !self.0.var {
            return self.clone();
        }
        T::make(
            self.dims().to_vec(),
            self.0.strides.clone(),
            self.dt(),
            self.0.storage.clone(),
            None,
        )
    }
}

/// candle's `Tensor::sorted_nodes`: depth-first, inputs in op order, leaves first, reversed.
pub fn sorted_nodes(root: &T) -> Vec<T> {
    fn walk(n: &T, nodes: &mut Vec<T>, seen: &mut HashMap<usize, bool>) -> bool {
        if let Some(&tg) = seen.get(&n.id()) {
            return tg;
        }
        let mut tg = false;
        if n.is_var() {
            tg = true;
        } else if is_int(n.dt()) {
        } else if let Some(op) = &n.0.op {
            let ins: Vec<&T> = match op {
                Op::Binary(a, b, _)
                | Op::Matmul(a, b)
                | Op::Gather(a, b)
                | Op::IndexSelect(a, b) => vec![a, b],
                Op::WhereCond(a, b, c) | Op::Indexed3(a, b, c) => vec![a, b, c],
                Op::Cat(v) => v.iter().collect(),
                Op::ToDType(a) if !is_int(a.dt()) => vec![a],
                Op::ToDType(_) => vec![],
                Op::Affine(a, m) => {
                    if *m == 0.0 {
                        vec![]
                    } else {
                        vec![a]
                    }
                }
                Op::Unary(a, _)
                | Op::Sum(a)
                | Op::Max(a)
                | Op::Cmp(a)
                | Op::Reshape(a)
                | Op::Transpose(a, ..)
                | Op::Broadcast(a)
                | Op::Narrow(a, ..)
                | Op::Copy(a) => vec![a],
            };
            for i in ins {
                tg |= walk(i, nodes, seen);
            }
        }
        seen.insert(n.id(), tg);
        if tg {
            nodes.push(n.clone());
        }
        tg
    }
    let mut nodes = Vec::new();
    walk(root, &mut nodes, &mut HashMap::new());
    nodes.reverse();
    nodes
}

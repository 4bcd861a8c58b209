//! Shape-only tensors with candle's ownership: storage freed when the last holder goes, backprop
//! ops holding their inputs, views sharing storage (candle-core src/tensor.rs).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static LIVE: Cell<u64> = const { Cell::new(0) };
    static PEAK: Cell<u64> = const { Cell::new(0) };
    static NEXT_ID: Cell<usize> = const { Cell::new(0) };
}

/// Bytes the replay holds now, and their high-water mark since the last `reset_peak`.
pub fn live() -> u64 {
    LIVE.with(|l| l.get())
}
pub fn peak() -> u64 {
    PEAK.with(|p| p.get())
}
pub fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

struct Storage(u64);
impl Storage {
    fn new(bytes: u64) -> Rc<Storage> {
        let now = live() + bytes;
        LIVE.with(|l| l.set(now));
        PEAK.with(|p| p.set(p.get().max(now)));
        Rc::new(Storage(bytes))
    }
}
impl Drop for Storage {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - self.0));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DT {
    F32,
    BF16,
    U8,
    U32,
}
impl DT {
    fn size(self) -> u64 {
        match self {
            DT::F32 | DT::U32 => 4,
            DT::BF16 => 2,
            DT::U8 => 1,
        }
    }
    fn is_int(self) -> bool {
        matches!(self, DT::U8 | DT::U32)
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Un {
    Sqr,
    Sqrt,
    Exp,
    Log,
    Neg,
    Erf,
    GeluErf,
}
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

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
    Cat(Vec<T>, usize),
    Indexed3(T, T, T),
}

impl Op {
    pub fn name(&self) -> String {
        match self {
            Op::Binary(_, _, b) => format!("{b:?}"),
            Op::Unary(_, u) => format!("{u:?}"),
            Op::Affine(..) => "Affine".into(),
            Op::Sum(_) => "Sum".into(),
            Op::Max(_) => "Max".into(),
            Op::Cmp(_) => "Cmp".into(),
            Op::Matmul(..) => "Matmul".into(),
            Op::Reshape(_) => "Reshape".into(),
            Op::Transpose(..) => "Transpose".into(),
            Op::Broadcast(_) => "Broadcast".into(),
            Op::Narrow(..) => "Narrow".into(),
            Op::Copy(_) => "Copy".into(),
            Op::ToDType(_) => "ToDType".into(),
            Op::WhereCond(..) => "WhereCond".into(),
            Op::Gather(..) => "Gather".into(),
            Op::IndexSelect(..) => "IndexSelect".into(),
            Op::Cat(..) => "Cat".into(),
            Op::Indexed3(..) => "IndexAdd".into(),
        }
    }
}

pub struct Node {
    pub id: usize,
    pub dims: Vec<usize>,
    pub strides: Vec<usize>,
    pub dt: DT,
    storage: Rc<Storage>,
    pub op: Option<Op>,
    pub var: bool,
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

fn numel(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

impl T {
    fn make(dims: Vec<usize>, strides: Vec<usize>, dt: DT, st: Rc<Storage>, op: Option<Op>) -> T {
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
        }))
    }
    /// A fresh contiguous tensor; `op` is kept only if an input is tracked (BackpropOp::new).
    fn fresh(dims: Vec<usize>, dt: DT, op: Option<Op>, inputs: &[&T]) -> T {
        let st = Storage::new(numel(&dims) * dt.size());
        let op = op.filter(|_| inputs.iter().any(|t| t.tracked()));
        T::make(dims.clone(), contiguous_strides(&dims), dt, st, op)
    }
    /// A view: same storage, new layout, new id.
    fn view(&self, dims: Vec<usize>, strides: Vec<usize>, op: Op) -> T {
        let op = Some(op).filter(|_| self.tracked());
        T::make(dims, strides, self.0.dt, self.0.storage.clone(), op)
    }
    pub fn new(dims: &[usize], dt: DT) -> T {
        T::fresh(dims.to_vec(), dt, None, &[])
    }
    pub fn var(dims: &[usize], dt: DT) -> T {
        let t = T::new(dims, dt);
        let n = Rc::try_unwrap(t.0).ok().unwrap();
        T(Rc::new(Node { var: true, ..n }))
    }
    pub fn id(&self) -> usize {
        self.0.id
    }
    pub fn dims(&self) -> &[usize] {
        &self.0.dims
    }
    pub fn dt(&self) -> DT {
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

    pub fn binary(&self, r: &T, b: Bin) -> T {
        T::fresh(
            self.dims().to_vec(),
            self.dt(),
            Some(Op::Binary(self.clone(), r.clone(), b)),
            &[self, r],
        )
    }
    pub fn add(&self, r: &T) -> T {
        self.binary(r, Bin::Add)
    }
    pub fn sub(&self, r: &T) -> T {
        self.binary(r, Bin::Sub)
    }
    pub fn mul(&self, r: &T) -> T {
        self.binary(r, Bin::Mul)
    }
    pub fn div(&self, r: &T) -> T {
        self.binary(r, Bin::Div)
    }
    /// broadcast_add & co: broadcast whichever side differs from the result shape.
    pub fn bcast(&self, r: &T, b: Bin) -> T {
        let n = self.rank().max(r.rank());
        let pad = |d: &[usize]| [vec![1; n - d.len()], d.to_vec()].concat();
        let (l, rr) = (pad(self.dims()), pad(r.dims()));
        let shape: Vec<usize> = l.iter().zip(&rr).map(|(a, b)| *a.max(b)).collect();
        let lb = if shape != self.dims() {
            self.broadcast_as(&shape)
        } else {
            self.clone()
        };
        let rb = if shape != r.dims() {
            r.broadcast_as(&shape)
        } else {
            r.clone()
        };
        lb.binary(&rb, b)
    }
    pub fn unary(&self, u: Un) -> T {
        T::fresh(
            self.dims().to_vec(),
            self.dt(),
            Some(Op::Unary(self.clone(), u)),
            &[self],
        )
    }
    pub fn affine(&self, mul: f64) -> T {
        T::fresh(
            self.dims().to_vec(),
            self.dt(),
            Some(Op::Affine(self.clone(), mul)),
            &[self],
        )
    }
    pub fn sum_keepdim(&self, ds: &[usize]) -> T {
        let mut dims = self.dims().to_vec();
        for &d in ds {
            dims[d] = 1;
        }
        T::fresh(dims, self.dt(), Some(Op::Sum(self.clone())), &[self])
    }
    pub fn max_keepdim(&self, d: usize) -> T {
        let mut dims = self.dims().to_vec();
        dims[d] = 1;
        T::fresh(dims, self.dt(), Some(Op::Max(self.clone())), &[self])
    }
    /// sum over every dim, keepdim = false: the reduction, then a reshape view to [].
    pub fn sum_all(&self) -> T {
        let s = T::fresh(
            vec![1; self.rank()],
            self.dt(),
            Some(Op::Sum(self.clone())),
            &[self],
        );
        if s.rank() == 1 {
            s.squeeze(0)
        } else {
            s.reshape(&[])
        }
    }
    /// eq / ge: a u8 tensor; the op records only `self` (cmp_op's BackpropOp::new1).
    pub fn cmp(&self) -> T {
        T::fresh(
            self.dims().to_vec(),
            DT::U8,
            Some(Op::Cmp(self.clone())),
            &[self],
        )
    }
    pub fn to_dtype(&self, dt: DT) -> T {
        if dt == self.dt() {
            return self.clone();
        }
        T::fresh(
            self.dims().to_vec(),
            dt,
            Some(Op::ToDType(self.clone())),
            &[self],
        )
    }
    pub fn matmul(&self, r: &T) -> T {
        let mut dims = self.dims().to_vec();
        *dims.last_mut().unwrap() = *r.dims().last().unwrap();
        T::fresh(
            dims,
            self.dt(),
            Some(Op::Matmul(self.clone(), r.clone())),
            &[self, r],
        )
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
    pub fn where_cond(&self, t: &T, f: &T) -> T {
        let op = Op::WhereCond(self.clone(), t.clone(), f.clone());
        T::fresh(t.dims().to_vec(), t.dt(), Some(op), &[self, t, f])
    }
    pub fn gather(&self, idx: &T) -> T {
        T::fresh(
            idx.dims().to_vec(),
            self.dt(),
            Some(Op::Gather(self.clone(), idx.clone())),
            &[self, idx],
        )
    }
    pub fn index_select(&self, idx: &T) -> T {
        let dims = vec![idx.dims()[0], self.dims()[1]];
        T::fresh(
            dims,
            self.dt(),
            Some(Op::IndexSelect(self.clone(), idx.clone())),
            &[self, idx],
        )
    }
    /// index_add / scatter_add: a new tensor of self's shape.
    pub fn indexed_add(&self, idx: &T, src: &T) -> T {
        let op = Op::Indexed3(self.clone(), idx.clone(), src.clone());
        T::fresh(self.dims().to_vec(), self.dt(), Some(op), &[self, idx, src])
    }
    pub fn cat(args: &[T], d: usize) -> T {
        let mut dims = args[0].dims().to_vec();
        dims[d] = args.iter().map(|a| a.dims()[d]).sum();
        let refs: Vec<&T> = args.iter().collect();
        T::fresh(dims, args[0].dt(), Some(Op::Cat(args.to_vec(), d)), &refs)
    }
    pub fn zeros_like(&self) -> T {
        T::new(self.dims(), self.dt())
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
        } else if n.dt().is_int() {
        } else if let Some(op) = &n.0.op {
            let ins: Vec<&T> = match op {
                Op::Binary(a, b, _)
                | Op::Matmul(a, b)
                | Op::Gather(a, b)
                | Op::IndexSelect(a, b) => vec![a, b],
                Op::WhereCond(a, b, c) | Op::Indexed3(a, b, c) => vec![a, b, c],
                Op::Cat(v, _) => v.iter().collect(),
                Op::ToDType(a) if !a.dt().is_int() => vec![a],
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

//! candle's computing ops on shape-only tensors: each allocates a fresh contiguous output and,
//! when an input is tracked, records an op that holds its inputs.

use super::tensor::{Bin, Op, Un, T};
use crate::sim::DType;

impl T {
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
            DType::U8,
            Some(Op::Cmp(self.clone())),
            &[self],
        )
    }
    pub fn to_dtype(&self, dt: DType) -> T {
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
        T::fresh(dims, args[0].dt(), Some(Op::Cat(args.to_vec())), &refs)
    }
    pub fn zeros_like(&self) -> T {
        T::new(self.dims(), self.dt(), "zeros")
    }
}

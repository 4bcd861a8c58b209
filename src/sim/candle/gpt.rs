//! The GPT of src/sim/candle/nanogpt.rs on shape-only tensors: candle's ops as `T` records
//! them, each module running in its own scope so that what it allocates carries its name.

use super::nanogpt::{Bin, CandleTensor, Init, Un, Weights};
use super::record::{self, Scope};
use super::tensor::T;
use crate::sim::timeline::Category;
use crate::sim::DType;
use candle_core::Result;

impl CandleTensor for T {
    fn enter(layer: Option<u32>, module: &'static str, category: Category) {
        record::enter(Scope::new(layer, module, category));
    }
    fn dims(&self) -> Vec<usize> {
        T::dims(self).to_vec()
    }
    fn dtype(&self) -> DType {
        self.dt()
    }
    fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<T> {
        Ok(T::narrow(self, dim, start, len))
    }
    fn reshape(&self, dims: &[usize]) -> Result<T> {
        Ok(T::reshape(self, dims))
    }
    fn transpose(&self, a: usize, b: usize) -> Result<T> {
        Ok(T::transpose(self, a, b))
    }
    fn t(&self) -> Result<T> {
        Ok(T::t(self))
    }
    fn unsqueeze(&self, dim: usize) -> Result<T> {
        Ok(T::unsqueeze(self, dim))
    }
    fn contiguous(&self) -> Result<T> {
        Ok(T::contiguous(self))
    }
    fn broadcast_as(&self, dims: &[usize]) -> Result<T> {
        Ok(T::broadcast_as(self, dims))
    }
    fn matmul(&self, r: &T) -> Result<T> {
        Ok(T::matmul(self, r))
    }
    /// Only the shape matters here: the multiplier is kept for the backward's record.
    fn affine(&self, mul: f64, _add: f64) -> Result<T> {
        Ok(T::affine(self, mul))
    }
    fn binary(&self, r: &T, op: Bin) -> Result<T> {
        Ok(T::binary(self, r, op))
    }
    fn broadcast(&self, r: &T, op: Bin) -> Result<T> {
        Ok(self.bcast(r, op))
    }
    fn unary(&self, op: Un) -> Result<T> {
        Ok(T::unary(self, op))
    }
    fn sum_keepdim(&self, dim: usize) -> Result<T> {
        Ok(T::sum_keepdim(self, &[dim]))
    }
    fn max_keepdim(&self, dim: usize) -> Result<T> {
        Ok(T::max_keepdim(self, dim))
    }
    fn sum_all(&self) -> Result<T> {
        Ok(T::sum_all(self))
    }
    fn to_dtype(&self, dt: DType) -> Result<T> {
        Ok(T::to_dtype(self, dt))
    }
    fn where_cond(&self, on_true: &T, on_false: &T) -> Result<T> {
        Ok(T::where_cond(self, on_true, on_false))
    }
    fn index_select0(&self, idx: &T) -> Result<T> {
        Ok(self.index_select(idx))
    }
    fn gather1(&self, idx: &T) -> Result<T> {
        Ok(self.gather(idx))
    }
    /// candle_nn::ops::dropout: rand, ge, to_dtype, scale — none of it tracked — then
    /// xs * mask.
    fn dropout(&self, _p: f32) -> Result<T> {
        let mask = {
            let rand = T::new(T::dims(self), DType::F32, "dropout_rand");
            let _p = T::new(&[], DType::F32, "dropout_p").broadcast_as(T::dims(self));
            rand.cmp().to_dtype(self.dt()).affine(1.0)
        };
        Ok(self.mul(&mask))
    }
}

/// The parameters as shape-only variables, kept in creation order (AdamW's and the
/// backward's order).
pub struct SimWeights {
    pub params: Vec<T>,
    pub dt: DType,
}

impl Weights<T> for SimWeights {
    fn weight(
        &mut self,
        layer: Option<u32>,
        module: &'static str,
        what: &'static str,
        dims: &[usize],
        _init: Init,
    ) -> Result<T> {
        record::enter(Scope::new(layer, module, Category::Parameters));
        let t = T::var(dims, self.dt, what);
        self.params.push(t.clone());
        Ok(t)
    }

    fn buffers(&mut self, t: usize, dt: DType) -> Result<[T; 3]> {
        let causal = T::new(&[t, t], DType::U8, "causal_mask");
        let positions = T::new(&[t], DType::U32, "positions");
        let neg_inf = T::new(&[], DType::F32, "neg_inf").to_dtype(dt);
        Ok([causal, positions, neg_inf])
    }
}

//! Values torch.compile never materialises (`Residency::Fused`), the buffers a kernel needs
//! instead (`Operand`), and what each keeps alive: the engine's side of `ops::fusion`.

use super::dtype::DType;
use super::engine::{Engine, T};
use super::runtime::RuntimeKind;
use super::timeline::{Category, Name, Residency, Shape};

impl Engine {
    /// torch.compile's runtime: inductor fuses, AOTAutograd partitions (see `ops::fusion`).
    pub fn compiled(&self) -> bool {
        self.rt.kind == RuntimeKind::PytorchCompile
    }

    pub fn is_fused(&self, t: T) -> bool {
        self.tl.tensors[t as usize].residency == Residency::Fused
    }

    /// A value inductor computes inside its consumer's kernel: no allocation of its own; it
    /// holds a reference to each of `inputs` (buffers or other fused values) until consumed.
    pub fn alloc_fused(
        &mut self,
        name: Name,
        shape: Shape,
        dtype: DType,
        category: Category,
        inputs: &[T],
    ) -> T {
        let bytes = shape.numel().unwrap_or(0).saturating_mul(dtype.size());
        let id = self.record_tensor(name, shape, dtype, bytes, category, Residency::Fused);
        for &x in inputs {
            self.retain(x);
        }
        self.fused_inputs.insert(id, inputs.to_vec());
        id
    }

    /// A fused value that leaves the graph (a gradient handed to AccumulateGrad): the
    /// graph's output buffer, written by the kernel the value was fused into.
    pub fn realise(&mut self, t: T) -> T {
        if !self.is_fused(t) {
            return t;
        }
        let b = self.written(t, Residency::Buffer);
        self.release(t);
        b
    }

    /// The operand of a kernel that needs a real buffer (a matmul's input): `t` itself with a
    /// new reference, or, for a fused value, a buffer the fused chain is written into for this
    /// kernel (one reference; the caller releases it after the kernel).
    pub fn materialise(&mut self, t: T) -> T {
        if !self.is_fused(t) {
            self.retain(t);
            return t;
        }
        let b = self.written(t, Residency::Operand);
        if !self.grad_mode {
            // An inference graph recomputes nothing: once the kernel has written the operand,
            // the buffers the fused chain read are dead unless something else holds them.
            self.consume(t);
        }
        b
    }

    /// The buffer a kernel writes fused value `t` into (same name, shape, dtype, category).
    fn written(&mut self, t: T, residency: Residency) -> T {
        let r = self.tl.tensors[t as usize];
        let b = self.alloc(r.name, r.shape, r.dtype, r.category);
        self.tl.tensors[b as usize].residency = residency;
        b
    }

    /// A fused chain computed by a kernel: let go of what it (and the fused values it reads)
    /// kept alive.
    pub(super) fn consume(&mut self, t: T) {
        let Some(inputs) = self.fused_inputs.get_mut(&t).map(std::mem::take) else {
            return;
        };
        for x in inputs {
            if self.is_fused(x) {
                self.consume(x);
            }
            self.release(x);
        }
    }
}

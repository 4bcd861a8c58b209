//! `F.layer_norm` (nanoGPT's LayerNorm, GPT-NeoX's): its forward in fp32, eager and compiled,
//! and its backward.

use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// `F.layer_norm`, in fp32 (autocast's fp32 list): output, mean and rstd (B, T, 1).
pub fn layer_norm(e: &mut Engine, x: V, w: usize, b: Option<usize>, name: Name) -> V {
    // Autocast casts a half-precision input to fp32 (a bf16 residual stream, e.g. a frozen
    // bf16 base under LoRA); the norm keeps the cast.
    let input = match e.autocast {
        Some(_) if e.dtype(x.t) != DType::F32 => super::linear::cast(
            e,
            x,
            DType::F32,
            None,
            Name {
                what: "input_fp32",
                ..name
            },
        ),
        _ => {
            e.retain(x.t);
            x
        }
    };
    let out = layer_norm_fp32(e, input, w, b, name);
    e.drop_value(input);
    out
}

fn layer_norm_fp32(e: &mut Engine, x: V, w: usize, b: Option<usize>, name: Name) -> V {
    let shape = e.shape(x.t);
    let d = shape.dims();
    let stat = Shape::new(&[d[0], d[1], 1]);
    let wv = e.param(w);
    let bv = b.map(|b| e.param(b));
    // fp32 under autocast (the input was cast); a half input without autocast (a model loaded
    // in bf16 for inference) gives a half output, with mean and rstd still in fp32.
    let dtype = e.dtype(x.t);
    if e.compiled() {
        return compiled_layer_norm(e, x, (wv, bv), name, stat);
    }
    let t = e.alloc(name, shape, dtype, Category::Activations);
    let mean = e.alloc(
        Name {
            what: "mean",
            ..name
        },
        stat,
        DType::F32,
        Category::Activations,
    );
    let rstd = e.alloc(
        Name {
            what: "rstd",
            ..name
        },
        stat,
        DType::F32,
        Category::Activations,
    );
    if !e.grad_mode {
        e.release(mean);
        e.release(rstd);
        return V {
            t,
            edge: Edge::None,
        };
    }
    let xs = save(e, x.t);
    let edge = e.push_node(
        Op::LayerNorm(LayerNormSaved {
            x: xs,
            mean: Some(mean),
            rstd,
            bias: b.is_some(),
            w_grad: wv.edge != Edge::None,
            c: d[2],
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, wv.edge, bv.map_or(Edge::None, |v| v.edge)],
    );
    V { t, edge }
}

/// The norm inside a compiled graph (fusion.rs). Inference: one fused kernel whose statistics
/// never leave registers; the output goes straight into its consumer. Training: AOTAutograd
/// decomposes `native_layer_norm` (torch/_decomp/decompositions.py) and the partition saves
/// the normalised x̂ = (x − mean)·rstd (fp32, what the backward's fused kernel reads) and rstd
/// — not x and mean; the affine output x̂·w + b stays fused into its consumer.
fn compiled_layer_norm(
    e: &mut Engine,
    x: V,
    (wv, bv): (V, Option<V>),
    name: Name,
    stat: Shape,
) -> V {
    let shape = e.shape(x.t);
    let dtype = e.dtype(x.t);
    if !e.grad_mode {
        let t = e.alloc_fused(name, shape, dtype, Category::Activations, &[x.t]);
        return V {
            t,
            edge: Edge::None,
        };
    }
    let at = |what| Name { what, ..name };
    let xhat = e.alloc(at("x_hat"), shape, DType::F32, Category::Activations);
    let rstd = e.alloc(at("rstd"), stat, DType::F32, Category::Activations);
    let t = e.alloc_fused(name, shape, dtype, Category::Activations, &[xhat]);
    let edge = e.push_node(
        Op::LayerNorm(LayerNormSaved {
            x: xhat,
            mean: None,
            rstd,
            bias: bv.is_some(),
            w_grad: wv.edge != Edge::None,
            c: shape.dims()[2],
            name: at("grad"),
        }),
        [x.edge, wv.edge, bv.map_or(Edge::None, |v| v.edge)],
    );
    V { t, edge }
}

/// NativeLayerNormBackward's state.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormSaved {
    /// The input (eager), or the normalised input x̂ (compiled, fusion.rs).
    x: T,
    /// None when compiled: the backward reads x̂ and rstd only.
    mean: Option<T>,
    rstd: T,
    bias: bool,
    /// The weight (and bias) need gradients (false when frozen).
    w_grad: bool,
    c: u64,
    name: Name,
}

impl Backward for LayerNormSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let LayerNormSaved {
            x,
            mean,
            rstd,
            bias,
            w_grad,
            c,
            name,
        } = self;
        // native_layer_norm_backward: grad_input in the input's dtype (fp32 under autocast,
        // which cast it), grad_weight and grad_bias in the trainable weight's (fp32, or `dtype`
        // when pure).
        let shape = e.shape(x);
        let gx = e.alloc(name, shape, e.dtype(x), Category::Activations);
        let wdtype = e.param_dtype;
        let pshape = Shape::new(&[c]);
        let gw = w_grad.then(|| {
            e.alloc(
                Name {
                    what: "weight.grad",
                    ..name
                },
                pshape,
                wdtype,
                Category::Gradients,
            )
        });
        let gb = (bias && w_grad).then(|| {
            e.alloc(
                Name {
                    what: "bias.grad",
                    ..name
                },
                pshape,
                wdtype,
                Category::Gradients,
            )
        });
        e.release(g);
        e.release(x);
        if let Some(mean) = mean {
            e.release(mean);
        }
        e.release(rstd);
        [Some(gx), gw, gb]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.x), self.mean, Some(self.rstd)]
    }
}

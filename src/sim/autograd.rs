//! The backward pass, as PyTorch's autograd engine runs it on one device.
//!
//! Nodes are processed in reverse creation order (the engine's priority by sequence number;
//! for a transformer's graph that is a valid topological order). A node allocates its input
//! gradients, then lets go of the gradient it received and of its saved tensors, then hands
//! each gradient on. Where a tensor receives a second gradient (the residual stream, the tied
//! wte/lm_head weight) it is added into the first in place; AccumulateGrad steals the first
//! gradient of a parameter as its `.grad` and adds later ones into it.

use super::dtype::DType;
use super::engine::{Engine, T, V};
use super::ops::{Backward, Op};
use super::timeline::{Category, Name, Phase, Shape};

/// Where a gradient goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Nothing needs it (inputs without grad, integer indices).
    None,
    /// Another node's input buffer.
    Node(u32),
    /// A parameter's AccumulateGrad.
    Param(u32),
    /// The input of a block being recomputed: its gradient is handed back to the checkpoint.
    Capture,
}

#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub op: Op,
    pub edges: [Edge; 3],
    /// The gradient of this node's output, once it has arrived.
    pub grad: Option<T>,
}

impl Engine {
    /// Record a backward node when autograd is on and some input needs a gradient.
    pub fn push_node(&mut self, op: Op, edges: [Edge; 3]) -> Edge {
        if !self.grad_mode {
            // Nothing was saved: `save` keeps references only when autograd records.
            return Edge::None;
        }
        if edges.iter().all(|e| *e == Edge::None) {
            op.release_saved(self);
            return Edge::None;
        }
        self.tape.push(Node {
            op,
            edges,
            grad: None,
        });
        Edge::Node((self.tape.len() - 1) as u32)
    }

    /// Hand a gradient to where it goes.
    pub fn deliver(&mut self, edge: Edge, g: T) {
        match edge {
            Edge::None => self.release(g),
            Edge::Capture => {
                self.captured = Some(match self.captured {
                    None => g,
                    Some(old) => self.accumulate(old, g),
                });
            }
            Edge::Node(n) => {
                let n = n as usize;
                self.tape[n].grad = Some(match self.tape[n].grad {
                    None => g,
                    Some(old) => self.accumulate(old, g),
                });
            }
            Edge::Param(p) => {
                let p = p as usize;
                let g = self.realise(g);
                self.params[p].pending = Some(match self.params[p].pending {
                    None => g,
                    Some(old) => self.accumulate(old, g),
                });
                self.params[p].uses = self.params[p].uses.saturating_sub(1);
                if self.params[p].uses == 0 {
                    self.accumulate_grad(p);
                }
            }
        }
    }

    /// Autograd's input buffer: `old += new` in place when it may, else `old + new`.
    fn accumulate(&mut self, old: T, new: T) -> T {
        if self.is_no_inplace(old) {
            let r = *self.record(old);
            let sum = self.alloc(r.name, r.shape, r.dtype, r.category);
            self.release(old);
            self.release(new);
            sum
        } else {
            self.release(new);
            old
        }
    }

    /// AccumulateGrad: the first gradient becomes `.grad`; later ones are added into it.
    fn accumulate_grad(&mut self, p: usize) {
        let Some(g) = self.params[p].pending.take() else {
            return;
        };
        match self.params[p].grad {
            None => {
                self.set_category(g, Category::Gradients);
                self.params[p].grad = Some(g);
            }
            Some(_) => {
                // A later micro-step's gradient, added into .grad and freed: named apart from
                // the .grad it is added into, so a table of live tensors shows which is which.
                let r = self.tl.tensors[g as usize].name;
                self.tl.tensors[g as usize].name = Name {
                    what: "micro_step_grad",
                    ..r
                };
                self.release(g)
            }
        }
        // The multi-GPU policy's gradient hook (DeepSpeed's, FSDP's) runs after AccumulateGrad.
        super::parallel::grad_ready(self, p);
    }

    /// Run every node of the current tape in reverse creation order, then drop it.
    fn run_tape(&mut self) {
        for n in (0..self.tape.len()).rev() {
            let node = self.tape[n];
            match node.grad {
                Some(g) => {
                    self.tape[n].grad = None;
                    let grads = node.op.backward(self, g);
                    for (edge, grad) in node.edges.into_iter().zip(grads) {
                        if let Some(grad) = grad {
                            self.deliver(edge, grad);
                        }
                    }
                }
                None => node.op.release_saved(self),
            }
        }
        self.tape.clear();
    }

    /// torch.utils.checkpoint (non-reentrant) around `f`: the forward keeps nothing but its
    /// input; the backward re-runs `f` with autograd on (in the backward's autocast state) and
    /// backpropagates through the recomputed graph before going on.
    pub fn checkpoint(&mut self, f: super::engine::Recompute, x: V) -> V {
        let grad_mode = self.grad_mode;
        self.grad_mode = false;
        let id = self.recompute.len() as u32;
        self.sac_enter(id, false);
        let outer = std::mem::replace(&mut self.in_checkpoint_forward, true);
        let out = f(
            self,
            V {
                t: x.t,
                edge: Edge::None,
            },
        );
        self.in_checkpoint_forward = outer;
        self.sac_leave();
        self.grad_mode = grad_mode;
        self.recompute.push(f);
        if self.offloads_checkpoint_inputs() {
            // `saved_hidden_states = hidden_states.to("cpu", non_blocking=True)`; only the host
            // copy is saved, so the GPU input goes when its caller lets go of it.
            let bytes = self.record(x.t).bytes;
            self.host_checkpoint(bytes, true);
        } else {
            self.retain(x.t);
        }
        let edge = self.push_node(
            Op::Checkpoint(CheckpointSaved { f: id, x: x.t }),
            [x.edge, Edge::None, Edge::None],
        );
        V { t: out.t, edge }
    }

    /// The backward of a checkpoint (`CheckpointSaved`): recompute, then backward through the recomputation.
    ///
    /// Non-reentrant (`_checkpoint_without_reentrant_generator`), only the gradient flows on:
    /// the recomputed output is not kept. Reentrant (torch/utils/checkpoint.py,
    /// `CheckpointFunction.backward`): `outputs = ctx.run_function(*detached_inputs)` and the
    /// incoming `args` are locals held until `torch.autograd.backward(outputs_with_grad,
    /// args_with_grad)` returns, as are the saved inputs.
    fn checkpoint_backward(&mut self, f: u32, x: T, g: T) -> T {
        let outer = std::mem::take(&mut self.tape);
        let captured = self.captured.take();
        let id = f;
        let f = self.recompute[f as usize].clone();
        let x = if self.offloads_checkpoint_inputs() {
            // `hidden_states.to("cuda", non_blocking=True).detach()`: a new GPU copy, a local of
            // the backward like the checkpoint's own reference to its input.
            let r = *self.record(x);
            self.host_checkpoint(r.bytes, false);
            let name = Name {
                what: "input_from_host",
                ..r.name
            };
            self.alloc(name, r.shape, r.dtype, r.category)
        } else {
            x
        };
        self.enter_autocast(self.rt.autocast);
        self.sac_enter(id, true);
        let out = f(
            self,
            V {
                t: x,
                edge: Edge::Capture,
            },
        );
        self.sac_leave();
        self.exit_autocast();
        let reentrant = self.reentrant_checkpoint;
        if reentrant {
            self.retain(g);
        }
        self.deliver(out.edge, g);
        if !reentrant {
            self.release(out.t);
            self.release(x);
        }
        self.run_tape();
        if reentrant {
            self.release(g);
            self.release(out.t);
            self.release(x);
        }
        self.tape = outer;
        let gx = self.captured.take();
        self.captured = captured;
        gx.unwrap_or_else(|| {
            // A block whose input gets no gradient does not occur in a GPT; keep the engine
            // total: an empty gradient.
            self.alloc(
                Name::top("checkpoint", "grad"),
                Shape::scalar(),
                DType::F32,
                Category::Activations,
            )
        })
    }

    /// `loss.backward()`: runs every recorded node, then drops the graph.
    pub fn backward(&mut self, loss: V) {
        let saved_phase = self.phase;
        self.phase = Phase::Backward;
        // The engine's graph root: ones_like(loss), held until the backward returns.
        let root = self.alloc(
            Name::top("loss", "grad"),
            Shape::scalar(),
            DType::F32,
            Category::Logits,
        );
        self.retain(root);
        self.deliver(loss.edge, root);
        self.run_tape();
        for p in 0..self.params.len() {
            self.params[p].uses = 0;
            self.accumulate_grad(p);
        }
        self.release(root);
        self.phase = saved_phase;
    }
}

/// A checkpointed block: recompute `f` on the saved input `x` in the backward.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointSaved {
    f: u32,
    x: T,
}

impl Backward for CheckpointSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        [Some(e.checkpoint_backward(self.f, self.x, g)), None, None]
    }

    fn release_saved(self, e: &mut Engine) {
        if e.offloads_checkpoint_inputs() {
            // An offloaded input has no GPU reference to let go of, only its host copy.
            let bytes = e.record(self.x).bytes;
            e.host_checkpoint(bytes, false);
        } else {
            e.release(self.x);
        }
    }
}

"""Ground truth for what torch.compile (inductor) does to nanoGPT's memory, without a GPU.

For one config: trace the training step and the no_grad graphs the way torch.compile does
(capture_graphs.capture), then report
  * the tensors the forward graph saves for backward (min_cut_rematerialization_partition),
    grouped by storage (views of one buffer counted once), with the op that allocated them;
  * an aten-level liveness peak of the forward, backward and inference graphs (each node
    output is allocated when produced and freed after its last use; views share their
    base's storage). This is the UNFUSED upper bound: inductor never materialises most
    pointwise intermediates (see inductor_buffers.py for the fused plan);
  * answers to the questions the simulator needs (weight casts, GELU/LN/dropout, CE).

Usage: python partition.py --name tiny --n-layer 2 ... --out fixtures/compile-proxy/tiny.json
"""
import argparse
import datetime
import json
import operator
import sys

import torch
from torch.multiprocessing.reductions import StorageWeakRef

import capture_graphs
from gpt import GPTConfig

ELEM = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, torch.int64: 8, torch.bool: 1}


def tensor_val(node):
    v = node.meta.get("val")
    return v if isinstance(v, torch.Tensor) else None


def storage_key(t):
    return StorageWeakRef(t.untyped_storage()).cdata


def module_path(node):
    stack = node.meta.get("nn_module_stack") or node.meta.get("fwd_nn_module_stack")
    if not stack:
        src = node.meta.get("source_fn_stack")
        return ("<functional:%s>" % src[-1][0]) if src else ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self___", "")


def op_name(node):
    if node.op == "placeholder":
        return "placeholder"
    if node.target is operator.getitem:
        parent = node.args[0]
        return "%s[%d]" % (op_name(parent), node.args[1])
    return str(node.target)


class Storages:
    """Maps every tensor node of a graph to the node that first produced its storage."""

    def __init__(self, graph):
        self.base = {}
        self.nbytes = {}
        first = {}
        for n in graph.nodes:
            t = tensor_val(n)
            if t is None:
                continue
            k = storage_key(t)
            if k not in first:
                first[k] = n
                self.nbytes[n] = t.untyped_storage().nbytes()
            self.base[n] = first[k]


def describe(node, storages, placeholders_kind):
    base = storages.base[node]
    t = tensor_val(node)
    b = tensor_val(base)
    kind = "activation"
    if base.op == "placeholder":
        kind = placeholders_kind.get(base.name, "input")
    elif (str(base.target) == "prims.convert_element_type.default"
          and base.args[0].op == "placeholder"
          and placeholders_kind.get(base.args[0].name) == "param"):
        kind = "autocast_weight_copy"
    return {
        "node": node.name,
        "shape": list(t.shape),
        "dtype": str(t.dtype).replace("torch.", ""),
        "base_node": base.name,
        "base_op": op_name(base),
        "base_original_aten": str(base.meta.get("original_aten", "")),
        "base_shape": list(b.shape),
        "base_dtype": str(b.dtype).replace("torch.", ""),
        "storage_bytes": storages.nbytes[base],
        "module": module_path(base),
        "kind": kind,
    }


def liveness_peak(graph, count_inputs=False):
    """Walk the graph in order. Each new storage is allocated when its first node runs and
    freed after the last node that uses any node on it (graph outputs are never freed).
    count_inputs: placeholders start live and are freed after their last use (inductor's
    wrapper steals its args and dels each input after its last use), else they are free."""
    st = Storages(graph)
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {}
    out_node = nodes[-1]
    outputs = set()
    for a in _flatten(out_node.args):
        if isinstance(a, torch.fx.Node) and a in st.base:
            outputs.add(st.base[a])
    for n in nodes:
        if n not in st.base:
            continue
        b = st.base[n]
        end = max([pos[u] for u in n.users if u is not out_node] + [pos[n]])
        last_use[b] = max(last_use.get(b, -1), end)
    frees = {}
    for b, end in last_use.items():
        if b in outputs:
            continue
        frees.setdefault(end, []).append(b)
    live = 0
    if count_inputs:
        live = sum(st.nbytes[b] for b in st.nbytes if b.op == "placeholder")
    peak, peak_at = live, "start"
    for i, n in enumerate(nodes):
        if n in st.nbytes and n.op != "placeholder":
            live += st.nbytes[n]
            if live > peak:
                peak, peak_at = live, n.name
        for b in frees.get(i, []):
            if b.op == "placeholder" and not count_inputs:
                continue
            live -= st.nbytes[b]
    out_bytes = sum(st.nbytes[b] for b in outputs if b.op != "placeholder")
    return {"peak_bytes": peak, "peak_at_node": peak_at,
            "peak_node_module": module_path(_by_name(graph, peak_at)) if peak_at != "start" else "",
            "output_bytes_allocated_by_graph": out_bytes,
            "input_bytes": sum(st.nbytes[b] for b in st.nbytes if b.op == "placeholder")}


def _by_name(graph, name):
    for n in graph.nodes:
        if n.name == name:
            return n
    return None


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


def param_or_input(fw, bw):
    """The backward graph returns one gradient per forward primal, None for inputs that need
    none (idx, targets, the causal-mask buffer): a primal with a gradient is a parameter."""
    primals = [n for n in fw.graph.nodes if n.op == "placeholder"]
    grads = list(_flatten(list(bw.graph.nodes)[-1].args[0]))
    grads = grads[-len(primals):] if len(grads) >= len(primals) else grads
    return {p.name: ("param" if isinstance(g, torch.fx.Node) else "input")
            for p, g in zip(primals, grads)}


def saved_for_backward(rec):
    fw, bw = rec["fw"], rec["bw"]
    n_out = rec["num_fwd_outputs"]
    out = list(fw.graph.nodes)[-1]
    outs = list(_flatten(out.args[0]))
    saved = [n for n in outs[n_out:] if isinstance(n, torch.fx.Node) and tensor_val(n) is not None]
    st = Storages(fw.graph)
    kinds = param_or_input(fw, bw)
    rows = [describe(n, st, kinds) for n in saved]
    groups = {}
    for r in rows:
        g = groups.setdefault(r["base_node"], {
            "base_node": r["base_node"], "base_op": r["base_op"],
            "original_aten": r["base_original_aten"], "module": r["module"],
            "shape": r["base_shape"], "dtype": r["base_dtype"], "bytes": r["storage_bytes"],
            "kind": r["kind"], "saved_as": []})
        g["saved_as"].append(r["node"])
    user_outputs = set()
    for n in outs[:n_out]:
        if isinstance(n, torch.fx.Node) and n in st.base:
            user_outputs.add(st.base[n].name)
    for g in groups.values():
        g["also_forward_output"] = g["base_node"] in user_outputs
    new_mem = [g for g in groups.values() if g["kind"] not in ("param", "input")]
    return {
        "tensors": rows,
        "storages": list(groups.values()),
        "activation_bytes": sum(g["bytes"] for g in new_mem if g["kind"] == "activation"),
        "autocast_weight_copy_bytes": sum(g["bytes"] for g in new_mem
                                          if g["kind"] == "autocast_weight_copy"),
        "saved_symints": len([n for n in outs[n_out:] if isinstance(n, torch.fx.Node)
                              and tensor_val(n) is None]),
    }


def per_layer(saved, layer="transformer.h.0"):
    rows = [g for g in saved["storages"] if g["module"].startswith(layer + ".")
            or g["module"] == layer]
    return {"module_prefix": layer,
            "bytes": sum(g["bytes"] for g in rows if g["kind"] == "activation"),
            "weight_copy_bytes": sum(g["bytes"] for g in rows
                                     if g["kind"] == "autocast_weight_copy"),
            "storages": [{k: g[k] for k in ("base_node", "original_aten", "module", "shape",
                                            "dtype", "bytes", "kind")} for g in rows]}


def eager_saved_per_layer(cfg, batch, dtype):
    """What eager autograd saves per Block under autocast (independent count, from the
    derivatives.yaml formulas): ln_1 input (fp32 residual) + mean + rstd; c_attn input (the
    bf16 cast of ln_1's output); flash SDPA q,k,v (views of the qkv output), out, logsumexp
    [B,H,T] fp32 (+ philox seed/offset, 16 B, ignored); c_proj input = SDPA out viewed as
    [B,T,C] (no copy: flash allocates out in [B,T,H,D] order); ln_2 input + mean + rstd;
    c_fc input (bf16 ln_2 out); gelu input (c_fc out); mlp c_proj input (gelu out).
    dropout>0 adds the two bool masks (resid, mlp) of [B,T,C] (attention dropout is inside
    flash). Weight copies: nanoGPT runs the forward inside the autocast context and the
    backward outside; autocast's cast cache is dropped at context exit, but autograd saved the
    bf16 copies as mm inputs, so they live until their backward node runs (the same 12*C^2
    low-precision bytes per layer as compile)."""
    if not cfg.flash:
        return {"bytes": None, "parts": {},
                "weight_copy_bytes": 12 * cfg.n_embd ** 2 * (2 if dtype != "fp32" else 0),
                "note": "eager count only written for the flash path"}
    B, T, C, H = batch, cfg.block_size, cfg.n_embd, cfg.n_head
    lo = 2 if dtype in ("bf16", "fp16") else 4
    BTC = B * T * C
    parts = {
        "ln_1 input fp32 + mean + rstd": 4 * BTC + 8 * B * T,
        "c_attn input (ln_1 out, low precision)": lo * BTC,
        "qkv (c_attn out)": 3 * lo * BTC,
        "sdpa out": lo * BTC,
        "sdpa logsumexp fp32": 4 * B * H * T,
        "ln_2 input fp32 + mean + rstd": 4 * BTC + 8 * B * T,
        "c_fc input (ln_2 out, low precision)": lo * BTC,
        "c_fc out (gelu input)": 4 * lo * BTC,
        "gelu out (c_proj input)": 4 * lo * BTC,
    }
    if cfg.dropout > 0:
        parts["dropout masks (attn resid + mlp) bool"] = 2 * BTC
    if dtype == "fp32":
        parts["c_attn input (ln_1 out, low precision)"] = 0  # the LN output itself, fp32
        parts["ln_1 out fp32 (c_attn input)"] = 4 * BTC
        parts["c_fc input (ln_2 out, low precision)"] = 0
        parts["ln_2 out fp32 (c_fc input)"] = 4 * BTC
    weights = 12 * C * C * lo if dtype != "fp32" else 0
    return {"bytes": sum(parts.values()), "parts": parts, "weight_copy_bytes": weights}


def questions(rec, saved):
    """Direct answers, read off the partitioned graphs."""
    fw, bw = rec["fw"], rec["bw"]
    st = saved["storages"]

    def saved_where(pred):
        return [g["base_node"] + " (" + g["module"] + ", " + g["original_aten"] + ")"
                for g in st if pred(g)]

    random_fw = [n.name + ":" + str(n.target) for n in fw.graph.nodes
                 if "rand" in str(n.target) or "seed" in str(n.target)]
    random_bw = [n.name + ":" + str(n.target) for n in bw.graph.nodes
                 if "rand" in str(n.target) or "seed" in str(n.target)]
    # cross-entropy backward: every bw node whose value has the logits' [N, V] shape
    ce_nodes = []
    out = list(fw.graph.nodes)[-1]
    user_logits = list(_flatten(out.args[0]))[0]
    lshape = list(tensor_val(user_logits).shape)
    NV = [lshape[0] * lshape[1], lshape[2]]
    bst = Storages(bw.graph)
    for n in bw.graph.nodes:
        t = tensor_val(n)
        if t is None or n.op == "placeholder" or bst.base.get(n) is not n:
            continue
        if t.numel() == NV[0] * NV[1]:
            ce_nodes.append({"node": n.name, "op": op_name(n), "shape": list(t.shape),
                             "dtype": str(t.dtype).replace("torch.", ""),
                             "bytes": bst.nbytes[n], "module": module_path(n)})
    return {
        "autocast_weight_copies_saved": saved_where(lambda g: g["kind"] == "autocast_weight_copy"),
        "gelu_related_saved": saved_where(lambda g: "mlp" in g["module"]),
        "layernorm_related_saved": saved_where(lambda g: ".ln_" in ("." + g["module"])
                                               or g["module"].endswith("ln_f")),
        "random_ops_forward": random_fw,
        "random_ops_backward": random_bw,
        "bool_saved": saved_where(lambda g: g["dtype"] == "bool"),
        "cross_entropy_saved": saved_where(lambda g: g["module"] in ("lm_head", "")
                                           or g["module"].startswith("<functional")),
        "backward_nodes_with_logits_numel": ce_nodes,
    }


def compare_policy(cfg, batch, dtype):
    """The training graph is traced on CPU with the CUDA autocast policy emulated; check the
    emulation against an exact CUDA-fake trace of the eval graph (same forward ops): the
    sequence of (op, dtype, shape) of every non-view node must agree, the SDPA kernel name
    aside."""
    cpu = capture_graphs.capture(cfg, batch, dtype, device="cpu", phases=("eval",))["eval_gm"]
    cuda = capture_graphs.capture(cfg, batch, dtype, device="cuda", phases=("eval",))["eval_gm"]

    def sig(g):
        rows = []
        for n in g.graph.nodes:
            t = tensor_val(n)
            if n.op != "call_function" or t is None:
                continue
            name = op_name(n).replace("_for_cpu", "")
            # the CPU stand-in is always the flash kernel; CUDA picks efficient for fp32
            name = name.replace("_scaled_dot_product_efficient_attention",
                                "_scaled_dot_product_flash_attention")
            rows.append((name, str(t.dtype), tuple(t.shape)))
        return rows

    a, b = sig(cpu), sig(cuda)
    diffs = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return {"cpu_nodes": len(a), "cuda_nodes": len(b), "mismatches": len(diffs) + abs(len(a) - len(b)),
            "first_mismatches": [[i, list(map(str, x)), list(map(str, y))] for i, x, y in diffs[:8]]}


DIFFERS_FROM_CUDA = [
    "Training graph traced with CPU fake tensors (the autograd engine needs a CUDA context to "
    "trace a CUDA backward: GraphTask::stash_current_streams -> hasPrimaryContext fails without "
    "a driver). CUDA autocast policy emulated for softmax and cross_entropy "
    "(capture_graphs.cuda_autocast_policy_on_cpu); policy check against a CUDA-fake trace in "
    "'policy_check'.",
    "SDPA in the training graph is aten._scaled_dot_product_flash_attention_for_cpu standing in "
    "for CUDA flash/efficient attention: same saved q,k,v,out and logsumexp [B,H,T] fp32; CUDA "
    "flash also saves philox seed+offset (2 x 8 B) and, with dropout, applies it inside the "
    "kernel (the stand-in runs with dropout 0). Memory-efficient attention (fp32 on CUDA) pads "
    "logsumexp to [B,H,ceil(T/32)*32].",
    "Inference graphs (infer, eval) traced with CUDA fake tensors and the real CUDA autocast "
    "dispatch; SDPA kernel chosen as sm80+ would (capture_graphs.sdpa_backend_like_h100).",
    "nanoGPT's generate path indexes x[:, [-1], :] (a [B,1,C] copy); ours slices x[:, -1:, :] "
    "(a view).",
    "Liveness peaks are over the unfused aten graph (upper bound); inductor fuses pointwise ops "
    "and reuses buffers. The fused plan comes from inductor_buffers.py (CPU codegen proxy).",
]


def run(args):
    cfg = GPTConfig(block_size=args.block_size, vocab_size=args.vocab, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout,
                    flash=not args.no_flash)
    rec = capture_graphs.capture(cfg, args.batch, args.dtype, device="cpu", phases=("train",))
    inf = capture_graphs.capture(cfg, args.batch, args.dtype, device="cuda",
                                 phases=("infer", "eval"))
    saved = saved_for_backward(rec)
    result = {
        "name": args.name,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "config": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                   "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
                   "batch": args.batch, "dtype": args.dtype, "flash": cfg.flash,
                   "dropout": cfg.dropout, "bias": cfg.bias},
        "differs_from_cuda": DIFFERS_FROM_CUDA,
        "saved_for_backward": saved,
        "saved_per_layer_compile": per_layer(saved),
        "saved_per_layer_eager": eager_saved_per_layer(cfg, args.batch, args.dtype),
        "forward_graph": liveness_peak(rec["fw"].graph),
        "backward_graph": {
            "new_allocations_only": liveness_peak(rec["bw"].graph),
            "inputs_freed_after_last_use": liveness_peak(rec["bw"].graph, count_inputs=True),
        },
        "inference_graph_generate": liveness_peak(inf["infer_gm"].graph),
        "inference_graph_eval_with_targets": liveness_peak(inf["eval_gm"].graph),
        "questions": questions(rec, saved),
    }
    if args.policy_check:
        result["policy_check"] = compare_policy(cfg, args.batch, args.dtype)
    if args.dump_graphs:
        with open(args.dump_graphs, "w") as f:
            for k in ("fw", "bw"):
                f.write("#### %s\n%s\n" % (k, rec[k].graph))
            for k in ("infer_gm", "eval_gm"):
                f.write("#### %s\n%s\n" % (k, inf[k].graph))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--no-flash", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--policy-check", action="store_true")
    p.add_argument("--dump-graphs")
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()

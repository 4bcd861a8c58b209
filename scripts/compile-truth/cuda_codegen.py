"""Inductor's CUDA (Triton) wrapper code, generated without a GPU.

Inductor writes the whole wrapper (every empty_strided_cuda, `del buf`, `# reuse`, extern mm
and SDPA call) before it loads the module; only loading needs a driver (Triton compiles its
kernels then). GraphLowering.save_output_code (torch/_inductor/graph.py,
_compile_to_module_lines) hands us the source first, so we let the load fail afterwards.

To get that far without a driver we answer the device queries codegen makes as an H100
would (sm90, 132 SMs, warp 32) — DeviceProperties.create (runtime/hints.py),
torch.cuda.get_device_properties/capability, has_triton (scheduler.create_backend),
_check_triton_bf16_support (compile_fx.py) and triton_hash_with_backend (codegen/triton.py
inductor_meta_common). These answers only steer kernel configs (block sizes, persistent
reductions), not fusion or the buffer plan.

Inference graphs come from fake CUDA tensors directly (capture_graphs). The training fw/bw
graphs are the CPU-traced ones (see capture_graphs) moved to CUDA: factory devices rewritten,
the CPU flash-attention stand-ins replaced by aten._scaled_dot_product_flash_attention and
its backward (whose extra arguments — cum_seq_q/k, max_q/k, philox seed/offset — are
created in the backward graph as empty tensors), meta values re-propagated with fake CUDA
inputs, then compile_fx_inner is called on each graph as compile_fx_forward/backward would.
"""
import contextlib
import copy
import types

import torch
import torch._inductor.compile_fx as cfx
from torch._inductor.graph import GraphLowering
from torch._subclasses.fake_tensor import FakeTensorMode

import capture_graphs

aten = torch.ops.aten
CUDA = torch.device("cuda", 0)


class _Loaded(Exception):
    pass


@contextlib.contextmanager
def pretend_h100(codes):
    """Patches the device queries inductor's CUDA codegen makes; collects wrapper sources."""
    from torch._inductor.runtime.hints import DeviceProperties
    import torch._inductor.scheduler as sched
    import torch.utils._triton as ut

    h100 = DeviceProperties(type="cuda", index=0, multi_processor_count=132, cc=90, major=9,
                            regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048,
                            max_threads_per_block=1024, warp_size=32)
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
        total_memory=80 * 2**30, regs_per_multiprocessor=65536,
        max_threads_per_multi_processor=2048, max_threads_per_block=1024, warp_size=32,
        gcnArchName="", L2_cache_size=50 * 2**20, shared_memory_per_block_optin=232448)
    patches = [
        (DeviceProperties, "create", classmethod(lambda cls, device: h100)),
        (torch.cuda, "get_device_properties", lambda *a, **k: props),
        (torch.cuda, "get_device_capability", lambda *a, **k: (9, 0)),
        (torch.cuda, "current_device", lambda: 0),
        (torch.cuda, "device_count", lambda: 1),
        (ut, "has_triton", lambda *a, **k: True),
        (ut, "triton_hash_with_backend", lambda: "pretend-sm90"),
        (sched, "has_triton", lambda *a, **k: True),
        (cfx, "_check_triton_bf16_support", lambda gm: None),
        (GraphLowering, "save_output_code", staticmethod(codes.append)),
        # pad_mm decides by timing padded vs unpadded mm on the GPU (fx_passes/pad_mm.py
        # _should_pad -> benchmark_gpu); only reached when an mm dim is misaligned.
        (torch._inductor.config, "shape_padding", False),
    ]
    saved = [(obj, name, obj.__dict__.get(name, getattr(obj, name))) for obj, name, _ in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def _compile_keep_code(codes):
    def inner(gm, example_inputs, **kwargs):
        n = len(codes)
        try:
            return cfx.compile_fx_inner(gm, example_inputs, **kwargs)
        except Exception:  # noqa: BLE001 - loading the module needs a driver
            if len(codes) == n:
                raise
            raise capture_graphs._Captured()
    return inner


def inference_codes(cfg, batch, dtype):
    """Wrapper sources of the generate and eval graphs, compiled for CUDA."""
    out = {}
    for phase in ("infer", "eval"):
        codes = []
        with pretend_h100(codes):
            capture_graphs.capture(cfg, batch, dtype, device="cuda", phases=(phase,),
                                   inner_compile=_compile_keep_code(codes))
        out[phase] = codes[-1] if codes else None
    return out


def _to_cuda(gm, is_backward):
    gm = copy.deepcopy(gm)
    g = gm.graph
    def cuda_if_cpu(a):
        return CUDA if isinstance(a, torch.device) and a.type == "cpu" else a

    for n in list(g.nodes):
        if n.op == "call_function":  # device kwargs and positional devices (inductor_seeds)
            n.args = tuple(cuda_if_cpu(a) for a in n.args)
            n.kwargs = {k: cuda_if_cpu(v) for k, v in n.kwargs.items()}
        if n.target is aten._scaled_dot_product_flash_attention_for_cpu.default:
            q, k, v, dp, causal = n.args[:5]
            n.target = aten._scaled_dot_product_flash_attention.default
            n.args = (q, k, v, dp, causal, False)
            n.kwargs = {"scale": n.kwargs["scale"]} if n.kwargs.get("scale") else {}
        elif n.target is aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
            grad_out, q, k, v, o, lse, dp, causal = n.args[:8]
            T = n.args[1].meta["val"].shape[-2]
            with g.inserting_before(n):
                cum = g.call_function(aten.empty.memory_format, ([0],),
                                      {"dtype": torch.int32, "device": CUDA})
                seed = g.call_function(aten.empty.memory_format, ([2],),
                                       {"dtype": torch.uint64, "device": CUDA})
                off = g.call_function(aten.empty.memory_format, ([],),
                                      {"dtype": torch.uint64, "device": CUDA})
            n.target = aten._scaled_dot_product_flash_attention_backward.default
            n.args = (grad_out, q, k, v, o, lse, cum, cum, T, T, dp, causal, seed, off)
            n.kwargs = {"scale": n.kwargs["scale"]} if n.kwargs.get("scale") else {}
    g.lint()
    gm.recompile()
    return gm


def _fake_inputs(gm, mode):
    """Fake CUDA inputs with the traced strides, except the flash logsumexp: the CPU kernel
    returns it [B,H,T] with T-major strides, the CUDA kernel contiguous."""
    lse = {n.args[5] for n in gm.graph.nodes
           if n.target is aten._scaled_dot_product_flash_attention_backward.default}
    out = []
    with mode:
        for n in gm.graph.nodes:
            if n.op != "placeholder":
                continue
            v = n.meta["val"]
            stride = torch.empty(v.shape, device="meta").stride() if n in lse else v.stride()
            out.append(torch.empty_strided(tuple(v.shape), tuple(stride), dtype=v.dtype,
                                           device=CUDA))
    return out


def training_codes(cfg, batch, dtype):
    """Wrapper sources of the training forward and backward graphs, compiled for CUDA."""
    from torch._inductor.virtualized import V
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    rec = capture_graphs.capture(cfg, batch, dtype, device="cpu", phases=("train",))
    out = {}
    for key, is_bw in (("fw", False), ("bw", True)):
        gm = _to_cuda(rec[key], is_bw)
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        inputs = _fake_inputs(gm, mode)
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)
        codes = []
        with pretend_h100(codes), V.set_fake_mode(mode), \
                torch._guards.tracing(torch._guards.TracingContext(mode)):
            try:
                kwargs = {"is_backward": is_bw, "is_inference": False}
                if not is_bw:
                    kwargs["static_input_idxs"] = []
                _compile_keep_code(codes)(gm, inputs, **kwargs)
            except capture_graphs._Captured:
                pass
        out[key] = codes[-1] if codes else None
    out["bw_input_bytes"] = backward_input_storages(rec)
    return out


def backward_input_storages(rec):
    """name -> (storage id, bytes) for the backward graph's inputs that it may free: saved
    activations (grouped by the forward storage they alias) and tangents. Parameters and
    idx/targets stay alive (the module / the training loop hold them)."""
    import partition
    fw, bw = rec["fw"], rec["bw"]
    st = partition.Storages(fw.graph)
    kinds = partition.param_or_input(fw, bw)
    by_name = {n.name: n for n in fw.graph.nodes}
    out = {}
    for n in bw.graph.nodes:
        if n.op != "placeholder":
            continue
        t = n.meta.get("val")
        if not isinstance(t, torch.Tensor):
            continue
        if n.name.startswith("tangents"):
            out[n.name] = (n.name, t.untyped_storage().nbytes())
            continue
        src = by_name.get(n.name)
        if src is None or src not in st.base:
            continue
        base = st.base[src]
        if base.op == "placeholder" and kinds.get(base.name) in ("param", "input"):
            continue
        out[n.name] = (base.name, st.nbytes[base])
    return out

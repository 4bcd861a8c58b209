"""Trace nanoGPT-shaped GPT under torch.compile(backend=inductor) with fake CUDA tensors and
capture the graphs inductor would compile, without compiling (no GPU needed).

Hooks (read torch/_inductor/compile_fx.py to follow along):
  * compile_fx(..., inner_compile=...) is the public seam inductor exposes: aot_autograd calls
    fw_compiler_base/bw_compiler/inference_compiler, which call inner_compile(gm, inputs, ...)
    with the partitioned forward/backward graph (or the inference graph).
  * torch._inductor.compile_fx.partition_fn is looked up by name when compile_fx_aot builds
    aot_autograd; wrapping it records the joint graph (after inductor's joint-graph passes,
    which partition_fn itself runs) and the (fw, bw) pair returned by
    min_cut_rematerialization_partition(compiler="inductor").
We stop by raising _Captured in inner_compile once what we need is recorded.
"""
import contextlib

import torch
import torch._inductor.compile_fx as cfx
from torch._subclasses.fake_tensor import FakeTensorMode

from gpt import GPT, GPTConfig


class _Captured(Exception):
    pass


_SDP_LIB = None


def sdpa_backend_like_h100(query, attn_mask):
    """What sdp_utils.cpp select_sdp_backend answers on an sm80+ GPU with the default
    priority order (torch._C._get_sdp_priority_order() == [flash, efficient, math, cudnn]):
    flash for fp16/bf16 without attn_mask and head_dim <= 256 divisible by 8 (the flash
    checks check_tensor_dtype/check_head_dim_size_flash); else memory-efficient attention
    (fp32 allowed) when head_dim % 8 == 0; else the math decomposition."""
    from torch.nn.attention import SDPBackend
    hd = query.shape[-1]
    if (query.dtype in (torch.float16, torch.bfloat16) and attn_mask is None
            and hd <= 256 and hd % 8 == 0):
        return SDPBackend.FLASH_ATTENTION
    if query.dtype in (torch.float16, torch.bfloat16, torch.float32) and hd % 8 == 0:
        return SDPBackend.EFFICIENT_ATTENTION
    return SDPBackend.MATH


def choose_sdpa_like_h100():
    """aten::scaled_dot_product_attention (CompositeImplicitAutograd, in
    aten/src/ATen/native/transformers/attention.cpp) calls the CUDA backend selector
    _fused_sdp_choice_stub directly; without a driver its hardware checks fail and it falls
    back to the math path (upcast to fp32, [B,H,T,T] scores). We re-register the composite in
    Python with the same body but the selector above, so fake CUDA traces see the kernels a
    real sm80+ GPU runs (_scaled_dot_product_flash_attention / _efficient_attention)."""
    global _SDP_LIB
    if _SDP_LIB is not None:
        return
    from torch.nn.attention import SDPBackend
    aten = torch.ops.aten
    math_kernel = aten._scaled_dot_product_attention_math

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
        choice = sdpa_backend_like_h100(query, attn_mask)
        if query.device.type == "cpu":
            if choice == SDPBackend.MATH:
                return math_kernel(query, key, value, attn_mask, dropout_p, is_causal,
                                   scale=scale, enable_gqa=enable_gqa)[0]
            # Stand-in for the CUDA flash / efficient kernels when the training graph is
            # traced on CPU (see capture()): same outputs that matter for memory (out in
            # [B,T,H,D] strides, logsumexp [B,H,T] fp32) and the same saved inputs. The
            # dropout is applied inside the CUDA kernels (philox seed/offset saved, no mask),
            # so the stand-in runs without dropout and the graph stays mask-free too.
            return aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, 0.0, is_causal, attn_mask=attn_mask, scale=scale)[0]
        if choice == SDPBackend.FLASH_ATTENTION:
            return aten._scaled_dot_product_flash_attention(
                query, key, value, dropout_p, is_causal, False, scale=scale)[0]
        if choice == SDPBackend.EFFICIENT_ATTENTION:
            need_lse = torch.is_grad_enabled() and any(
                t.requires_grad for t in (query, key, value))
            return aten._scaled_dot_product_efficient_attention(
                query, key, value, attn_mask, need_lse, dropout_p, is_causal,
                scale=scale)[0]
        return math_kernel(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                           enable_gqa=enable_gqa)[0]

    _SDP_LIB = torch.library.Library("aten", "IMPL")
    _SDP_LIB.impl("scaled_dot_product_attention", sdpa, "CompositeImplicitAutograd")


_FOLD_PATCHED = False


def fold_constants_on_cpu():
    """Inductor's joint-graph pass constant_fold_uniform_value
    (torch/_inductor/fx_passes/joint_graph.py, UniformValueConstantFolder) evaluates factory
    nodes for real on their device to find uniform constants. Without a driver a CUDA
    factory fails, so we evaluate them on the CPU: only the value is read back, and the
    replacement node is built from node.meta["val"] (device and dtype kept)."""
    global _FOLD_PATCHED
    if _FOLD_PATCHED:
        return
    from torch._inductor.fx_passes import joint_graph
    folder = joint_graph.UniformValueConstantFolder
    real = folder._deduce_value

    def deduce_on_cpu(self, node):
        dev = node.kwargs.get("device")
        if dev is None or torch.device(dev).type != "cuda":
            return real(self, node)
        saved = node.kwargs
        node.kwargs = {**saved, "device": torch.device("cpu")}
        try:
            return real(self, node)
        finally:
            node.kwargs = saved

    folder._deduce_value = deduce_on_cpu
    _FOLD_PATCHED = True


@contextlib.contextmanager
def cuda_autocast_policy_on_cpu(enabled):
    """CPU autocast differs from CUDA autocast (aten/src/ATen/autocast_mode.cpp) on two ops
    nanoGPT uses; everything else it uses (linear/matmul lower precision, layer_norm on an
    fp32 residual, embedding, gelu, add) lands on the same dtypes. We rewrite the two:
      * softmax: CUDA lists it fp32_set_opt_dtype (no dtype given -> computed and returned
        in fp32); CPU has no policy (stays bf16). -> call softmax(dtype=float32).
      * cross_entropy: CUDA has no policy for it; its composite (aten/src/ATen/native/
        LossNLL.cpp cross_entropy_loss) calls log_softmax(x, dim, x.scalar_type()) -> a bf16
        [N,V] log-prob tensor, then nll_loss (CUDA fp32 list) casts that to fp32. CPU lists
        cross_entropy_loss as fp32 (casts the logits first). -> write the CUDA sequence out.
    The CUDA-fake inference graph checks this (compare_policy in partition.py)."""
    if not enabled:
        yield
        return
    import torch.nn.functional as F
    real_softmax, real_ce = F.softmax, F.cross_entropy

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype is None and torch.is_autocast_enabled("cpu"):
            dtype = torch.float32
        return real_softmax(input, dim=dim, dtype=dtype)

    def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                      reduce=None, reduction="mean", label_smoothing=0.0):
        if not torch.is_autocast_enabled("cpu"):
            return real_ce(input, target, weight, size_average, ignore_index, reduce,
                           reduction, label_smoothing)
        with torch.autocast("cpu", enabled=False):
            logp = torch.log_softmax(input, 1, dtype=input.dtype)
            return F.nll_loss(logp.float(), target, weight, ignore_index=ignore_index,
                              reduction=reduction)

    F.softmax, F.cross_entropy = softmax, cross_entropy
    try:
        yield
    finally:
        F.softmax, F.cross_entropy = real_softmax, real_ce


@contextlib.contextmanager
def pretend_cuda_autocast():
    """torch.autocast('cuda') refuses to enable itself when no driver is present
    (torch/amp/autocast_mode.py: amp_definitely_not_available). The autocast dispatch key
    and its CUDA cast policy (aten/src/ATen/autocast_mode.cpp) need no driver, so we only
    lift the Python-side checks."""
    import torch.cuda.amp.common as amp_common
    saved = (amp_common.amp_definitely_not_available, torch.cuda.is_bf16_supported)
    amp_common.amp_definitely_not_available = lambda: False
    torch.cuda.is_bf16_supported = lambda *a, **k: True
    try:
        yield
    finally:
        amp_common.amp_definitely_not_available, torch.cuda.is_bf16_supported = saved


def capture(cfg: GPTConfig, batch: int, dtype: str, device: str = "cuda", fake: bool = True,
            inner_compile=None, phases=("train", "infer", "eval")):
    """Returns a dict: joint_in/fw/bw/num_fwd_outputs from the training partition,
    infer_gm and eval_gm the no_grad inference graphs (see plan below)."""
    torch._dynamo.reset()
    choose_sdpa_like_h100()
    fold_constants_on_cpu()
    rec = {}
    real_partition = cfx.partition_fn

    def recording_partition(gm, joint_inputs, **kwargs):
        rec["joint_in"] = gm
        fw, bw = real_partition(gm, joint_inputs, **kwargs)
        rec["fw"], rec["bw"] = fw, bw
        rec["num_fwd_outputs"] = kwargs.get("num_fwd_outputs")
        return fw, bw

    def stop_inner(gm, example_inputs, **kwargs):
        if kwargs.get("is_inference"):
            rec[rec["_phase"] + "_gm"] = gm
        else:
            rec["bw_gm" if kwargs.get("is_backward") else "fw_gm"] = gm
        if inner_compile is not None:
            return inner_compile(gm, example_inputs, **kwargs)
        raise _Captured()

    def backend(gm, example_inputs):
        return cfx.compile_fx(gm, example_inputs, inner_compile=stop_inner)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[dtype]
    mode = FakeTensorMode(allow_non_fake_inputs=False) if fake else contextlib.nullcontext()
    emulate = device == "cpu" and amp_dtype is not None

    def policy():
        if device == "cuda":
            return pretend_cuda_autocast()
        return cuda_autocast_policy_on_cpu(emulate)

    def autocast():
        # nanoGPT train.py: ctx = torch.amp.autocast(device_type, dtype=ptdtype); for
        # float32 autocast to fp32 is a no-op, so we leave it off.
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=amp_dtype)

    # Each phase is one fresh dynamo compile; name -> (train mode, grad, pass targets)
    # train: the training step; infer: generate() (targets=None, last position only);
    # eval: estimate_loss() in train.py, model(X, Y) under no_grad after model.eval().
    plan = {"train": (True, True, True), "infer": (False, False, False),
            "eval": (False, False, True)}
    cfx.partition_fn = recording_partition
    try:
        with mode, torch.device(device):
            torch.manual_seed(0)
            model = GPT(cfg)
            idx = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)
            tgt = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)
        for phase in phases:
            training, grad, with_targets = plan[phase]
            torch._dynamo.reset()
            model.train(training)
            compiled = torch.compile(model, backend=backend, fullgraph=True)
            rec["_phase"] = phase
            try:
                with policy(), torch.set_grad_enabled(grad), autocast():
                    compiled(idx, tgt) if with_targets else compiled(idx)
            except Exception as e:  # noqa: BLE001 - _Captured arrives wrapped by dynamo
                if not _is_captured(e):
                    raise
    finally:
        cfx.partition_fn = real_partition
    rec.pop("_phase", None)
    return rec


def _is_captured(e):
    while e is not None:
        if isinstance(e, _Captured):
            return True
        e = e.__cause__ or e.__context__
    return False

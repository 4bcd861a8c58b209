//! The phase of the run, read from the stack that raised the message.
//!
//! Frames are read innermost first. A *specific* signal (optimizer, backward, compilation,
//! KV cache, model load, init) decides at the innermost frame that carries one: Lightning's
//! `optimizer_step` wraps a closure that runs backward, and the OOM inside that closure is a
//! backward OOM. *Context* signals (an eval function, a `@torch.no_grad` decorator) outrank the
//! plain forward pass they wrap: nanoGPT's `estimate_loss()` → `model(X, Y)` is eval. Frames of
//! inductor-generated code only say "compiled code ran", so they count when nothing else does.

use super::normalize::Normalized;
use super::pattern::Lazy;
use super::types::Phase;
use regex::Regex;
use std::sync::OnceLock;

/// One stack frame as far as the log shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub file: String,
    pub func: String,
    pub code: String,
}

struct Res {
    py: Lazy,
    ipy8: Lazy,
    ipy: Lazy,
    ipy_code: Lazy,
    rust: Lazy,
    cpp: Lazy,
    raised_from: Lazy,
    header: Lazy,
    exception: Lazy,
    compile: Lazy,
    optimizer_func: Lazy,
    optimizer_code: Lazy,
    backward: Lazy,
    backward_code: Lazy,
    kv: Lazy,
    load: Lazy,
    load_code: Lazy,
    init: Lazy,
    eval: Lazy,
    forward: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| {
        let r = super::pattern::Lazy::new;
        Res {
            py: r(r#"^\s*File "(?P<file>[^"]*)", line \d+, in (?P<func>\S+)"#),
            // IPython 8: `File ~/x/train.py:42, in train_step(model, batch)`.
            ipy8: r(r"^\s*File\s+(?P<file>\S+?):\d+,\s+in\s+(?P<func>[\w<>.]+)"),
            ipy: r(r"^(?P<file>\S+\.py) in (?P<func>[\w<>.]+)\("),
            ipy_code: r(r"^-+>\s*\d+\s+(?P<code>.*)"),
            rust: r(r"^\s*\d+:\s+(?P<func>[\w<:][^\s]*)"),
            cpp: r(r"^frame #\d+:\s*(?P<func>.+?)(?:\s+\+\s+0x|\s*\(0x|$)"),
            raised_from: r(r"^Exception raised from (?P<func>\w+)"),
            header: r(r"Traceback \(most recent call last\)|stack backtrace:"),
            exception: r(r"^(?:[\w.]+(?:Error|Exception)\b|During handling|The above exception)"),
            compile: r(r"^(?:compile_fx\w*|fx_codegen_and_compile|_compile|compile_inner|_?convert_frame\w*|call_user_compiler|compile_to_module|autotune\w*|benchmark\w*|do_bench\w*|precompile\w*|create_aot_dispatcher_function|aot_dispatch_\w+|load_by_key_path|codegen\w*|_compile_fx_\w+)$"),
            optimizer_func: r(r"^(?:_single_tensor_\w+|_multi_tensor_\w+|_fused_\w+|adamw?|_adamw?|sgd|optimizer_step|_optimizer_step|_take_model_step|step_fused|_init_group|_apply_optimizer\w*)$"),
            optimizer_code: r(r"\b(?:optimizer|optim|opt|scaler)\w*\.step\("),
            backward: r(r"^(?:backward|_backward|run_backward|_engine_run_backward|backward_\w+|\w+_backward\w*|\w+Backward\w*|manual_backward|call_compiled_backward)$|::backward|_backward\b|Backward\d*::apply|autograd::Engine"),
            backward_code: r(r"\.backward\(|\bbackward\(|run_backward|_engine_run_backward"),
            // Function names only: HF forward signatures pass `past_key_values` in training too.
            // `kv`, `load` and `eval` are written in lower case and matched through
            // `matches_folded`: ASCII case folding for ASCII names (see `pattern`).
            kv: r(r"^generate$|^_?sample$|greedy_search|beam_search|prefill|kv_?cache|dynamiccache|staticcache|_update_cache|cache_engine|_allocate_kv_cache|initialize_cache|determine_num_available_blocks|allocate_cache"),
            load: r(r"load_state_dict|_load_from_state_dict|torch\.load\b|load_checkpoint|from_pretrained|_load_pretrained_model|load_sharded_checkpoint|set_module_tensor_to_device|dispatch_model|\bload_model\b|load_weights|safetensors|load_tensors|llama_model_load|var_builder|varbuilder|::load\b"),
            load_code: r(r"\b\w*(?:model|net|module|transformer|encoder|decoder|unet|vae|pipe|pipeline)\w*\s*(?:=\s*[\w.]+(?:\([^)]*\))?\s*)?\.(?:to|cuda)\("),
            init: r(r"init_process_group|_lazy_init|ncclCommInit\w*|init_processes|_sync_module_states|_verify_param_shape_across_processes|DistributedDataParallel\(|profile_run|llama_new_context\w*|llama_init_from_model|graph_reserve|sched_reserve"),
            eval: r(r"^(?:estimate_loss|evaluate\w*|evaluation\w*|eval|eval_\w+|\w+_eval|validate\w*|validation\w*|val_\w+|\w+_val|valid\w*|test_step|test_epoch\w*|predict\w*|prediction_step|inference\w*|run_test|compute_metrics|decorate_context)$"),
            forward: r(r"^(?:forward|_forward|_call_impl|_wrapped_call_impl|training_step|train_step|forward_step|\w+_forward|forward_\w+)$|::forward"),
        }
    })
}

/// Whether `ipy8` can match `t`: its line starts with `File` after white space (`\s` and
/// `trim_start` both take Unicode's White_Space). The literal tests here and beside `ipy`
/// (`.py in `) and `ipy_code` (a leading `-`) are what each pattern requires, so a line that
/// fails them cannot match: they spare the patterns' compile time on the tracebacks (most
/// logs) that have no IPython frames, and never change a result.
fn may_be_ipy8(t: &str) -> bool {
    t.trim_start().starts_with("File")
}

/// The frames of the stack that belongs to the message at byte `at`, innermost first: the
/// Python traceback above it (back to its `Traceback` header, never across a chained
/// exception), else the Rust or C++ backtrace below it.
pub fn frames_for(n: &Normalized, at: usize) -> Vec<Frame> {
    let r = res();
    let i = n.line_at(at);
    let Some(anchor) = n.lines.get(i) else {
        return Vec::new();
    };
    let same = |j: usize| n.lines[j].stream == anchor.stream;
    // Upward: Python (outermost first, so reversed at the end).
    let mut up: Vec<Frame> = Vec::new();
    let mut j = i;
    let mut steps = 0;
    while j > 0 && steps < 400 {
        j -= 1;
        steps += 1;
        if !same(j) {
            continue;
        }
        let t = n.lines[j].text.as_str();
        if r.header.is_match(t) {
            break;
        }
        if r.exception.is_match(t) && !up.is_empty() {
            break;
        }
        if let Some(c) =
            r.py.captures(t)
                .or_else(|| may_be_ipy8(t).then(|| r.ipy8.captures(t)).flatten())
                .or_else(|| t.contains(".py in ").then(|| r.ipy.captures(t)).flatten())
        {
            let code = up.pop_if_code().unwrap_or_default();
            up.push(Frame {
                file: c.name("file").map_or("", |m| m.as_str()).replace('\\', "/"),
                func: c.name("func").map_or("", |m| m.as_str()).to_string(),
                code,
            });
        } else if let Some(c) = t.starts_with('-').then(|| r.ipy_code.captures(t)).flatten() {
            up.push(Frame {
                code: c.name("code").map_or("", |m| m.as_str()).to_string(),
                ..Frame::default()
            });
        } else if t.starts_with([' ', '\t'])
            && !is_ipython_context(t)
            && !t.trim().chars().all(|c| "^~ ".contains(c))
        {
            // A code line (its File line is above it, or was elided by the poster).
            up.push(Frame {
                code: t.trim().to_string(),
                ..Frame::default()
            });
        }
    }
    // `up` was collected innermost first already.
    if up.iter().any(|f| !f.func.is_empty() || !f.code.is_empty()) {
        return up;
    }
    // Downward: Rust `N: path::to::fn` and C++ `frame #N:` backtraces, innermost first.
    let mut down = Vec::new();
    for j in i..n.lines.len().min(i + 200) {
        if !same(j) {
            continue;
        }
        let t = n.lines[j].text.as_str();
        if let Some(c) = r
            .rust
            .captures(t)
            .or_else(|| r.cpp.captures(t))
            .or_else(|| r.raised_from.captures(t))
        {
            down.push(Frame {
                func: c.name("func").map_or("", |m| m.as_str()).to_string(),
                ..Frame::default()
            });
        }
    }
    down
}

/// Code lines collected before their `File` line belong to it.
trait PopCode {
    fn pop_if_code(&mut self) -> Option<String>;
}

impl PopCode for Vec<Frame> {
    fn pop_if_code(&mut self) -> Option<String> {
        match self.last() {
            Some(f) if f.func.is_empty() && f.file.is_empty() => self.pop().map(|f| f.code),
            _ => None,
        }
    }
}

/// `Tensor.backward` → `backward`: IPython and Python 3.11 print qualified names.
fn short(func: &str) -> &str {
    func.rsplit('.').next().unwrap_or(func)
}

/// `re`, written in lower case, matched with ASCII case folding: the same answer as an
/// `(?i-u)` pattern on `text`, because the patterns' classes (`\w`, `\b`, `.`) do not depend
/// on case. Folding the text rather than the pattern compiles the long name alternations about
/// four times faster (236 µs against 60 µs for `kv`, measured alone), and `diagnose` compiles
/// them on every run that has a traceback.
fn matches_folded(re: &Regex, text: &str) -> bool {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        re.is_match(&text.to_ascii_lowercase())
    } else {
        re.is_match(text)
    }
}

/// IPython's numbered context lines around the `---->` one (`^\s+\d+\s`): not the running
/// code. By hand: the pattern's compile cost more than every line it reads.
fn is_ipython_context(line: &str) -> bool {
    let rest = line.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest.len() < line.len()
        && digits > 0
        && rest[digits..]
            .chars()
            .next()
            .is_some_and(char::is_whitespace)
}

/// The `*_code` patterns are tried only on code lines with the literal each one needs
/// (`.step(`, `backward`, `.to(`/`.cuda(`): most tracebacks then never compile them.
fn specific(f: &Frame) -> Option<Phase> {
    let r = res();
    let file = f.file.to_ascii_lowercase();
    let func = short(&f.func);
    let torch_internals = file.contains("torch/_inductor")
        || file.contains("torch/_dynamo")
        || file.contains("_functorch")
        || file.contains("triton");
    if torch_internals && r.compile.is_match(func) {
        return Some(Phase::Compile);
    }
    if r.optimizer_func.is_match(func)
        || (f.code.contains(".step(") && r.optimizer_code.is_match(&f.code))
        || file.contains("/optim/")
        || file.contains("optimizers/")
        || (func == "step" && (file.contains("optim") || file.contains("zero")))
        || func.contains("optim::") && func.contains("step")
    {
        return Some(Phase::Optimizer);
    }
    if r.backward.is_match(func)
        || (f.code.contains("backward") && r.backward_code.is_match(&f.code))
        || file.contains("torch/autograd/")
    {
        return Some(Phase::Backward);
    }
    if matches_folded(&r.kv, func)
        || file.contains("cache_utils")
        || f.code.contains(".generate(")
        || func.contains("kv_cache")
    {
        return Some(Phase::KvCache);
    }
    let module_apply = file.ends_with("torch/nn/modules/module.py")
        && matches!(func, "_apply" | "convert" | "to" | "cuda");
    if module_apply
        || matches_folded(&r.load, func)
        || matches_folded(&r.load, &f.code)
        || ((f.code.contains(".to(") || f.code.contains(".cuda(")) && r.load_code.is_match(&f.code))
    {
        return Some(Phase::ModelLoad);
    }
    if r.init.is_match(func) || r.init.is_match(&f.code) {
        return Some(Phase::Init);
    }
    None
}

fn compiled_code(f: &Frame) -> bool {
    let file = f.file.to_ascii_lowercase();
    file.contains("torchinductor_")
        || file.contains("torch/_inductor")
        || file.contains("torch/_dynamo")
        || file.contains("_aot_autograd")
        || f.code.contains("empty_strided_cuda")
}

/// The phase the frames (innermost first) say, or `None` when they say nothing.
pub fn classify(frames: &[Frame]) -> Option<Phase> {
    let r = res();
    if let Some(p) = frames.iter().find_map(specific) {
        return Some(p);
    }
    if frames
        .iter()
        .any(|f| matches_folded(&r.eval, short(&f.func)))
    {
        return Some(Phase::Eval);
    }
    if frames
        .iter()
        .any(|f| r.forward.is_match(short(&f.func)) || f.code.contains("model("))
    {
        return Some(Phase::Forward);
    }
    if frames.iter().any(compiled_code) {
        return Some(Phase::Compile);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::normalize::normalize;

    fn phase(log: &str) -> Option<Phase> {
        let n = normalize(log);
        let at = n.text.find("Error:").unwrap_or(0);
        classify(&frames_for(&n, at))
    }

    #[test]
    fn lightning_backward_inside_optimizer_step_is_backward() {
        let log = r#"Traceback (most recent call last):
  File "/x/lightning/pytorch/core/module.py", line 1, in optimizer_step
    optimizer.step(closure=optimizer_closure)
  File "/x/lightning/pytorch/loops/optimization/automatic.py", line 2, in closure
    self._backward_fn(step_output.closure_loss)
  File "/x/torch/_tensor.py", line 3, in backward
    torch.autograd.backward(
torch.OutOfMemoryError: CUDA out of memory."#;
        assert_eq!(phase(log), Some(Phase::Backward));
    }

    #[test]
    fn no_grad_eval_outranks_forward() {
        let log = r#"Traceback (most recent call last):
  File "train.py", line 264, in <module>
    losses = estimate_loss()
  File "/x/torch/utils/_contextlib.py", line 116, in decorate_context
    return func(*args, **kwargs)
  File "train.py", line 221, in estimate_loss
    logits, loss = model(X, Y)
  File "model.py", line 187, in forward
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
torch.OutOfMemoryError: CUDA out of memory."#;
        assert_eq!(phase(log), Some(Phase::Eval));
    }

    #[test]
    fn module_to_is_model_load_and_rust_load_too() {
        let log = "  File \"/x/torch/nn/modules/module.py\", line 1159, in convert\n    return t.to(\ntorch.cuda.OutOfMemoryError: CUDA out of memory.";
        assert_eq!(phase(log), Some(Phase::ModelLoad));
        let rust = "Error: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")\n   0: candle_core::error::Error::bt\n   5: candle_core::safetensors::MmapedSafetensors::load\n";
        assert_eq!(phase(rust), Some(Phase::ModelLoad));
    }

    #[test]
    fn folded_names_match_as_case_insensitive_patterns_would() {
        let r = res();
        // Mixed-case spellings real code uses (HF's `DynamicCache`, Keras-style `Evaluate`).
        for name in ["DynamicCache", "_Update_Cache", "Generate", "beam_search"] {
            assert!(matches_folded(&r.kv, name), "{name}");
        }
        assert!(matches_folded(&r.load, "model.From_Pretrained(path)"));
        assert!(matches_folded(&r.eval, "Estimate_Loss"));
        // Anchors and word boundaries still hold after folding.
        assert!(!matches_folded(&r.kv, "Regenerate"));
        assert!(!matches_folded(&r.load, "Torch.LoadX"));
        assert!(!matches_folded(&r.eval, "Estimate_Loss_Now"));
        // A literal with an upper-case letter could never match folded text (`\w` compiles to
        // the class `[0-9A-Za-z_]`, which is case-symmetric).
        for re in [&r.kv, &r.load, &r.eval] {
            let literals = re.as_str().replace("[0-9A-Za-z_]", "");
            assert!(
                !literals.bytes().any(|b| b.is_ascii_uppercase()),
                "{literals}"
            );
        }
    }

    #[test]
    fn ipython_context_lines_are_indented_numbers() {
        assert!(is_ipython_context("    263     losses = estimate_loss()"));
        assert!(is_ipython_context("\t1\tx"));
        assert!(is_ipython_context("\u{a0}12\u{a0}x"));
        assert!(!is_ipython_context("263 losses"));
        assert!(!is_ipython_context("    x = 263 "));
        assert!(!is_ipython_context("    263"));
        assert!(!is_ipython_context("    263x"));
    }
}

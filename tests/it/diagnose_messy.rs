//! The same message, pasted the ways people paste it: wrapped by a terminal at 80–150 columns
//! (mid-number too), behind torchrun / docker-compose / timestamp prefixes, coloured, with
//! CRLF, interleaved with another rank. The facts must not change. And nothing panics.

use crate::support::wrap::{fold, word_wrap};
use proptest::prelude::*;
use vramplan::diagnose::{parse, Diagnosis, Facts, Phase};

const SEED: &str = include_str!("../../fixtures/oom/seed-nanogpt-rtx3060.log");
const V1: &str = "RuntimeError: CUDA out of memory. Tried to allocate 786.00 MiB (GPU 0; 15.78 GiB total capacity; 14.28 GiB already allocated; 620.69 MiB free; 14.32 GiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF";

fn prefix(text: &str, p: &str) -> String {
    text.lines().map(|l| format!("{p}{l}\n")).collect()
}

fn same_facts(clean: &Diagnosis, messy: &str, what: &str) {
    let d = parse(messy);
    assert!(d.is_oom, "{what}");
    assert_eq!(d.facts, clean.facts, "{what}:\n{messy}");
    assert_eq!(d.device, clean.device, "{what}");
    assert_eq!(d.format, clean.format, "{what}");
}

#[test]
fn wraps_prefixes_colours_and_line_endings_do_not_change_the_facts() {
    for log in [SEED, V1] {
        let clean = parse(log);
        assert!(clean.facts.tried_to_allocate_bytes.is_some());
        for w in [80, 100, 120, 150] {
            same_facts(&clean, &fold(log, w), &format!("fold {w}"));
            same_facts(&clean, &word_wrap(log, w), &format!("word wrap {w}"));
            same_facts(
                &clean,
                &prefix(&fold(log, w), "[rank0]: "),
                &format!("torchrun + fold {w}"),
            );
            // A terminal wraps after docker-compose added its prefix: the rest has none.
            same_facts(
                &clean,
                &fold(&prefix(log, "trainer-1  | "), w),
                &format!("compose then fold {w}"),
            );
        }
        same_facts(
            &clean,
            &prefix(log, "2024-05-01T12:00:00.123Z "),
            "timestamps",
        );
        same_facts(&clean, &prefix(log, "[default0]:"), "[default0]:");
        same_facts(&clean, &log.replace('\n', "\r\n"), "crlf");
        same_facts(&clean, &format!("\x1b[31m{log}\x1b[0m"), "ansi");
        same_facts(&clean, &prefix(log, "> "), "markdown quote");
        same_facts(&clean, &log.replace("GPU 0", "GPU0"), "GPU0");
    }
    // The seed's phase survives the messiest of these.
    let messy = prefix(&fold(SEED, 80), "[rank0]: ").replace('\n', "\r\n");
    assert_eq!(parse(&messy).phase, Phase::Eval);
}

#[test]
fn interleaved_ranks_keep_their_own_facts() {
    let other = SEED
        .replace("GPU 0 has", "GPU 1 has")
        .replace("2.68 GiB is free", "1.11 GiB is free");
    let a: Vec<String> = fold(SEED, 100)
        .lines()
        .map(|l| format!("[rank0]: {l}"))
        .collect();
    let b: Vec<String> = fold(&other, 100)
        .lines()
        .map(|l| format!("[rank1]: {l}"))
        .collect();
    let mut mixed = String::new();
    for i in 0..a.len().max(b.len()) {
        for side in [&a, &b] {
            if let Some(l) = side.get(i) {
                mixed.push_str(l);
                mixed.push('\n');
            }
        }
    }
    let d = parse(&mixed);
    assert_eq!(d.facts, parse(SEED).facts);
    assert_eq!(d.phase, Phase::Eval);
    assert_eq!(d.other_reports.len(), 1);
    assert_eq!(d.other_reports[0].device.as_deref(), Some("1"));
}

#[test]
fn units_with_and_without_space_and_hip() {
    let d = parse("HIP out of memory. Tried to allocate 4.00MiB. GPU 3 has a total capacity of 191.98GiB of which 0B is free. Of the allocated memory 190.20GiB is allocated by PyTorch, and 12.00MiB is reserved by PyTorch but unallocated.");
    assert!(d.is_oom);
    assert_eq!(d.device.as_deref(), Some("3"));
    assert_eq!(d.facts.tried_to_allocate_bytes, Some(4 << 20));
    assert_eq!(d.facts.free_bytes, Some(0));
    assert_eq!(d.facts.reserved_unallocated_bytes, Some(12 << 20));
}

#[test]
fn absurd_figures_are_null_and_bogus() {
    let d = parse("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 99999999999999999999999999.00 GiB. GPU 0 has a total capacity of 18446744073709551616.00 GiB of which 17179869184.00 GiB is free.");
    assert!(d.is_oom);
    assert_eq!(d.facts, Facts::default());
    assert!(
        d.causes
            .iter()
            .filter(|c| c.kind.as_str() == "bogus_figure")
            .count()
            >= 3
    );
}

fn truncations(log: &str) -> impl Iterator<Item = &str> {
    let step = (log.len() / 97).max(1);
    (0..log.len())
        .step_by(step)
        .filter(|&i| log.is_char_boundary(i))
        .map(move |i| &log[..i])
}

#[test]
fn truncated_logs_never_panic() {
    for log in [SEED, V1] {
        for t in truncations(log) {
            let _ = parse(t);
            let _ = vramplan::diagnose::render_text(&parse(t));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let text = String::from_utf8_lossy(&bytes);
        let d = parse(&text);
        let _ = vramplan::diagnose::render_text(&d);
        let _ = serde_json::to_string(&d).unwrap();
    }

    #[test]
    fn arbitrary_text_around_the_message_never_panics(
        before in ".{0,300}",
        after in ".{0,300}",
        cut in 0usize..2000,
    ) {
        let log = format!("{before}{SEED}{after}");
        let mut end = cut.min(log.len());
        while !log.is_char_boundary(end) {
            end -= 1;
        }
        let _ = parse(&log[..end]);
        let _ = parse(&log[end..]);
    }

    #[test]
    fn huge_numbers_never_panic(
        tried in "[0-9]{1,40}(\\.[0-9]{1,30})?",
        total in "[0-9]{1,40}(\\.[0-9]{1,4})?",
        unit in prop::sample::select(vec!["GiB", "MiB", "KiB", "bytes", "B", "TiB", "G"]),
        pid in "[0-9]{1,30}",
    ) {
        let log = format!(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {tried} {unit}. GPU 0 has a total capacity of {total} {unit} of which {tried}{unit} is free. Process {pid} has {total} {unit} memory in use. Of the allocated memory {total} {unit} is allocated by PyTorch, with {tried} {unit} allocated in private pools (e.g., CUDA Graphs), and {tried} {unit} is reserved by PyTorch but unallocated.\nRuntimeError: CUDA out of memory. Tried to allocate {tried} {unit} (GPU 0; {total} {unit} total capacity; {tried} {unit} already allocated; {total} {unit} free; {tried} {unit} reserved in total by PyTorch)\nggml_backend_cuda_buffer_type_alloc_buffer: allocating {tried} MiB on device 0: cudaMalloc failed: out of memory\nOOM when allocating tensor with shape[{pid},{pid},{pid}] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc"
        );
        let d = parse(&log);
        prop_assert!(d.is_oom);
        let _ = vramplan::diagnose::render_text(&d);
        let _ = serde_json::to_string(&d).unwrap();
    }
}

/// Wordings the corpus does not contain, written from the runtimes' sources and docs: the
/// parsers must take them as formats, not as strings.
#[test]
fn wordings_beyond_the_corpus() {
    // `N allowed;` (set_per_process_memory_fraction) and both process clauses at once.
    let d = parse("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 7.79 GiB of which 11.06 MiB is free. Process 4242 has 1.20 GiB memory in use. Including non-PyTorch memory, this process has 6.50 GiB memory in use. 6.00 GiB allowed; Of the allocated memory 5.90 GiB is allocated by PyTorch, and 70.34 MiB is reserved by PyTorch but unallocated.");
    assert_eq!(d.facts.extra.get("allowed_bytes"), Some(&(6u64 << 30)));
    assert_eq!(d.facts.other_processes.len(), 1);
    assert!(d.facts.process_in_use_bytes.is_some());
    // IPython 8 traceback: `File ~/x.py:42, in f(...)`, numbered context lines ignored.
    let d = parse("OutOfMemoryError                          Traceback (most recent call last)\nCell In[12], line 5\n      3 for epoch in range(10):\n----> 5     loss = train_step(model, batch)\n\nFile ~/project/train.py:42, in train_step(model, batch)\n     40 out = model(batch)\n---> 42 loss.backward()\n     43 opt.step()\n\nFile /usr/lib/python3/site-packages/torch/_tensor.py:492, in Tensor.backward(self, gradient)\n\nOutOfMemoryError: CUDA out of memory. Tried to allocate 256.00 MiB. GPU 0 has a total capacity of 14.75 GiB of which 3.06 MiB is free.");
    assert_eq!(d.phase, Phase::Backward);
    // Windows spilling into system RAM: more allocated than the card has.
    let d = parse("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 8.00 GiB of which 0 bytes is free. Of the allocated memory 14.51 GiB is allocated by PyTorch, and 15.90 MiB is reserved by PyTorch but unallocated.");
    assert!(d.causes.iter().any(|c| c.kind.as_str() == "bogus_figure"));
    // TensorFlow 2 with a function node.
    let d = parse("tensorflow.python.framework.errors_impl.ResourceExhaustedError: {{function_node __wrapped__MatMul_device_/job:localhost/replica:0/task:0/device:GPU:0}} OOM when allocating tensor with shape[32,512,50257] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc [Op:MatMul]");
    assert_eq!(d.facts.tried_to_allocate_bytes, Some(32 * 512 * 50257 * 4));
    // Ollama embeds llama.cpp: ggml's wording names it.
    let d = parse("Error: llama runner process has terminated: cudaMalloc failed: out of memory");
    assert_eq!(d.format.map(|f| f.as_str()), Some("llamacpp"));
    // candle's nested error.
    assert!(
        parse("Error: Cuda(Cuda(DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")))").is_oom
    );
    // cuDNN and CuPy.
    assert_eq!(
        parse("RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
            .format
            .map(|f| f.as_str()),
        Some("other")
    );
    let d = parse("cupy.cuda.memory.OutOfMemoryError: Out of memory allocating 1,073,741,824 bytes (allocated so far: 2,147,483,648 bytes).");
    assert_eq!(d.facts.tried_to_allocate_bytes, Some(1 << 30));
    // vLLM V1's KV-cache check and its startup check.
    let d = parse("ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory (2.41 GiB). Based on the available memory, the estimated maximum model length is 19728.");
    assert_eq!(d.format.map(|f| f.as_str()), Some("vllm"));
    assert_eq!(d.facts.tried_to_allocate_bytes, Some(4 << 30));
    let d = parse("ValueError: Free memory on device (10.5/23.55 GiB) on startup is less than desired GPU memory utilization (0.9, 21.2 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.");
    assert!(d.facts.free_bytes.is_some() && d.facts.total_capacity_bytes.is_some());
    // Not VRAM: the OOM killer, a DataLoader worker killed.
    let d = parse("RuntimeError: DataLoader worker (pid 12345) is killed by signal: Killed.");
    assert!(!d.is_oom && d.causes[0].kind.as_str() == "not_vram");
    // Pinned host memory in llama.cpp is system RAM.
    let d = parse(
        "ggml_cuda_host_malloc: failed to allocate 500.00 MiB of pinned memory: out of memory",
    );
    assert!(!d.is_oom);
}

#[test]
fn launcher_prefixes_beyond_the_corpus() {
    let clean = parse(SEED);
    // srun --label, DeepSpeed's logger, a vLLM V1 engine core.
    same_facts(
        &clean,
        &prefix(&fold(SEED, 90), "0: "),
        "srun --label + fold",
    );
    same_facts(
        &clean,
        &prefix(
            SEED,
            "[2024-01-01 12:00:00,123] [INFO] [engine.py:42:step] ",
        ),
        "deepspeed logger",
    );
    same_facts(
        &clean,
        &prefix(
            SEED,
            "(EngineCore_0 pid=123) ERROR 05-18 14:27:49 [core.py:962] ",
        ),
        "vllm v1 engine core",
    );
    assert_eq!(parse(&prefix(&fold(SEED, 90), "0: ")).phase, Phase::Eval);
}

//! Properties of the size limits (src/config/limits.rs) over configs near them: a config
//! loads only when every key is within its limit; a key past its limit is refused in one line
//! that names the key, its value and the limit; loading never panics.

use proptest::prelude::*;
use vramplan::config::limits::{LIMITS, MAX_MICRO_BATCH_TOKENS};
use vramplan::config::load_str;

/// The keys this test sets: each with values just below, at and past its limit, or small.
fn near_limits() -> impl Strategy<Value = Vec<(&'static str, u64)>> {
    let keys: Vec<&'static str> = LIMITS
        .iter()
        .map(|l| l.key)
        // Keys that need a mode or an architecture to be set at all are left out.
        .filter(|k| {
            !matches!(
                *k,
                "lora_rank"
                    | "n_kv_head"
                    | "head_dim"
                    | "intermediate_size"
                    | "num_experts"
                    | "moe_intermediate_size"
            )
        })
        .collect();
    let one = prop::sample::select(keys).prop_flat_map(|key| {
        let max = LIMITS.iter().find(|l| l.key == key).unwrap().max;
        let value = prop_oneof![
            (max - 2)..=(max + 2),
            1u64..64,
            Just(max.saturating_mul(1 << 20)),
        ];
        (Just(key), value)
    });
    prop::collection::vec(one, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sizes_load_only_within_their_limits(sets in near_limits()) {
        let text: String = sets.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        // The last assignment of a key wins, as in Python.
        let value = |key: &str| sets.iter().rev().find(|(k, _)| *k == key).map(|s| s.1);
        let past: Vec<&str> = LIMITS
            .iter()
            .filter(|l| value(l.key).is_some_and(|v| v > l.max))
            .map(|l| l.key)
            .collect();
        match load_str("near.py", &text, &[]) {
            Ok(loaded) => {
                prop_assert!(past.is_empty(), "loaded past a limit: {past:?}\n{text}");
                let c = &loaded.config;
                prop_assert!(c.batch_size * c.block_size <= MAX_MICRO_BATCH_TOKENS);
                prop_assert!(c.eval_batch() * c.block_size <= MAX_MICRO_BATCH_TOKENS);
            }
            Err(e) => {
                let m = e.message();
                prop_assert!(!m.contains('\n'), "one line: {m}");
                // The first key past its limit, in the limits' order, is the one named, with
                // the line that set it.
                if let Some(key) = past.first() {
                    prop_assert!(m.starts_with("near.py:"), "names the file: {m}");
                    let l = LIMITS.iter().find(|l| l.key == *key).unwrap();
                    let expected = format!(
                        "{key} = {}: expected at most {} {}",
                        value(key).unwrap(),
                        l.max,
                        l.what
                    );
                    prop_assert!(m.contains(&expected), "{expected} in {m}\n{text}");
                }
            }
        }
    }
}

/// At each limit exactly, the simulator's work stays bounded: the deepest model a config may
/// ask for is checked end to end within seconds.
#[test]
fn the_deepest_allowed_model_is_checked_within_seconds() {
    let max_layers = LIMITS.iter().find(|l| l.key == "n_layer").unwrap().max;
    let start = std::time::Instant::now();
    let loaded = load_str("deep.toml", &format!("n_layer = {max_layers}\n"), &[]).unwrap();
    let gpu = vramplan::budget::find("h100").unwrap();
    let budget = vramplan::budget::Budget::from_profile(gpu, 256 << 20).unwrap();
    let report = vramplan::report::check::build(&loaded.config, Some(&budget)).unwrap();
    assert!(report.peak.device_bytes > 0);
    // Debug build, shared machine: a generous bound that still catches unbounded work.
    assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
}

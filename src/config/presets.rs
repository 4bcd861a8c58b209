//! Shape resolution the way nanoGPT's train.py does it: `init_from='gpt2*'` loads OpenAI's
//! weights and so fixes the shape (model.py `from_pretrained` forces vocab 50257, block 1024,
//! bias True; train.py then crops block_size down); `init_from='scratch'` takes vocab_size from
//! the dataset's meta.pkl, else 50304; `'resume'` keeps the checkpoint's (the config's) shape.

use super::value::Origin;
use super::TrainConfig;
use std::collections::HashMap;

/// A GPT-2 checkpoint's shape, as in model.py's `from_pretrained` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpt2Shape {
    pub n_layer: u64,
    pub n_head: u64,
    pub n_embd: u64,
}

/// OpenAI GPT-2 checkpoints: vocab 50257 (unpadded), 1024 positions, biases everywhere.
pub const GPT2_VOCAB: u64 = 50257;
pub const GPT2_BLOCK: u64 = 1024;
/// nanoGPT's from-scratch vocabulary: 50257 padded up to a multiple of 64.
pub const SCRATCH_VOCAB: u64 = 50304;

/// The `init_from` values nanoGPT's train.py accepts.
pub const INIT_FROM: &[&str] = &[
    "scratch",
    "resume",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
];

/// The shape `init_from` loads, if it names a GPT-2 checkpoint.
pub fn gpt2_shape(init_from: &str) -> Option<Gpt2Shape> {
    let (n_layer, n_head, n_embd) = match init_from {
        "gpt2" => (12, 12, 768),
        "gpt2-medium" => (24, 16, 1024),
        "gpt2-large" => (36, 20, 1280),
        "gpt2-xl" => (48, 25, 1600),
        _ => return None,
    };
    Some(Gpt2Shape {
        n_layer,
        n_head,
        n_embd,
    })
}

/// The vocabulary a dataset's meta.pkl declares, for nanoGPT's own prepared datasets.
/// Token-level datasets (openwebtext, shakespeare) have no meta.pkl: GPT-2's BPE.
pub fn dataset_vocab(dataset: &str) -> Option<u64> {
    match dataset {
        "shakespeare_char" => Some(65),
        _ => None,
    }
}

/// Apply nanoGPT's derivations after the keys of one layer (a file plus its overrides, or a
/// list of overrides) have been set. `origins` holds the keys that layer set; derived keys are
/// added with their derivation as origin. Only what the layer touched is re-derived, so applying
/// `--batch_size=8` to a resolved config never resets a vocab_size the file chose.
pub(crate) fn resolve(
    cfg: &mut TrainConfig,
    origins: &mut HashMap<&'static str, Origin>,
    warnings: &mut Vec<String>,
) {
    let set = |o: &HashMap<&'static str, Origin>, k: &str| o.contains_key(k);
    if let Some(shape) = gpt2_shape(&cfg.init_from) {
        let name = cfg.init_from.clone();
        let touched = ["init_from", "n_layer", "n_head", "n_embd", "bias"]
            .iter()
            .any(|k| set(origins, k));
        if touched {
            let fixed: [(&'static str, u64, &mut u64); 3] = [
                ("n_layer", shape.n_layer, &mut cfg.n_layer),
                ("n_head", shape.n_head, &mut cfg.n_head),
                ("n_embd", shape.n_embd, &mut cfg.n_embd),
            ];
            for (key, want, field) in fixed {
                if let Some(o) = origins.get(key) {
                    if *field != want {
                        warnings.push(format!(
                            "{o}: {key} = {field} is ignored: init_from='{name}' loads GPT-2 weights with {key} = {want} (nanoGPT's from_pretrained fixes the shape)"
                        ));
                    }
                }
                *field = want;
                origins.insert(key, Origin::Preset(name.clone()));
            }
            if let Some(o) = origins.get("bias") {
                if !cfg.bias {
                    warnings.push(format!("{o}: bias = False is ignored: init_from='{name}' loads GPT-2 weights, which have biases (bias = True)"));
                }
            }
            cfg.bias = true;
            origins.insert("bias", Origin::Preset(name.clone()));
        }
        if cfg.block_size > GPT2_BLOCK {
            let o = origins
                .get("block_size")
                .map_or(String::new(), |o| format!("{o}: "));
            warnings.push(format!(
                "{o}block_size = {} exceeds GPT-2's {GPT2_BLOCK} positions: nanoGPT builds the model with block_size {GPT2_BLOCK} (and its forward() refuses longer sequences); simulated at {GPT2_BLOCK}",
                cfg.block_size
            ));
            cfg.block_size = GPT2_BLOCK;
        }
        if set(origins, "init_from") && !set(origins, "vocab_size") {
            cfg.vocab_size = GPT2_VOCAB;
            origins.insert("vocab_size", Origin::Preset(name));
        }
    } else if (set(origins, "init_from") || set(origins, "dataset")) && !set(origins, "vocab_size")
    {
        // Scratch or resume: the vocabulary follows the dataset (meta.pkl), as train.py reads it.
        match dataset_vocab(&cfg.dataset) {
            Some(v) => {
                cfg.vocab_size = v;
                origins.insert("vocab_size", Origin::Dataset(cfg.dataset.clone()));
            }
            None => cfg.vocab_size = SCRATCH_VOCAB,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::Override("test".into())
    }

    #[test]
    fn gpt2_xl_fixes_the_shape_and_warns_about_ignored_keys() {
        let mut cfg = TrainConfig {
            init_from: "gpt2-xl".into(),
            n_layer: 6,
            block_size: 2048,
            ..TrainConfig::default()
        };
        let mut o: HashMap<&'static str, Origin> = [("init_from", origin()), ("n_layer", origin())]
            .into_iter()
            .collect();
        let mut w = Vec::new();
        resolve(&mut cfg, &mut o, &mut w);
        assert_eq!(
            (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size),
            (48, 25, 1600, 50257)
        );
        assert!(cfg.bias);
        assert_eq!(cfg.block_size, 1024);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("n_layer = 6 is ignored"));
    }

    #[test]
    fn explicit_vocab_wins_and_dataset_sets_char_vocab() {
        let mut cfg = TrainConfig {
            init_from: "gpt2".into(),
            vocab_size: 50304,
            ..TrainConfig::default()
        };
        let mut o: HashMap<&'static str, Origin> =
            [("init_from", origin()), ("vocab_size", origin())]
                .into_iter()
                .collect();
        resolve(&mut cfg, &mut o, &mut Vec::new());
        assert_eq!(cfg.vocab_size, 50304);

        let mut cfg = TrainConfig {
            dataset: "shakespeare_char".into(),
            ..TrainConfig::default()
        };
        let mut o: HashMap<&'static str, Origin> = [("dataset", origin())].into_iter().collect();
        resolve(&mut cfg, &mut o, &mut Vec::new());
        assert_eq!(cfg.vocab_size, 65);
    }

    #[test]
    fn untouched_layer_changes_nothing() {
        let mut cfg = TrainConfig {
            dataset: "shakespeare_char".into(),
            vocab_size: 100,
            ..TrainConfig::default()
        };
        let before = cfg.clone();
        let mut o: HashMap<&'static str, Origin> = [("batch_size", origin())].into_iter().collect();
        resolve(&mut cfg, &mut o, &mut Vec::new());
        assert_eq!(cfg, before);
    }
}

//! Sizes so absurd that their bytes do not fit in u64: the largest products the simulator
//! forms, checked before any work, each error blamed on its largest factor (the likely typo).

use super::blame::Blame;
use super::TrainConfig;
use crate::error::{Error, Result};

/// (overflows, what overflows, the factors as (key, value)).
type Check<'a> = (bool, &'a str, Vec<(&'a str, u64)>);

/// The largest products the simulator forms must fit in u64, with headroom for sums. The error
/// names the largest factor (the likely typo) and lists the others.
pub(super) fn check_bytes(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let mul = |xs: &[u64]| xs.iter().try_fold(1u64, |acc, &x| acc.checked_mul(x));
    let batch = cfg.batch_size.max(cfg.eval_batch());
    let b = (
        if cfg.eval_batch() > cfg.batch_size {
            "eval_batch_size"
        } else {
            "batch_size"
        },
        batch,
    );
    let (t, v, h, l) = (
        ("block_size", cfg.block_size),
        ("vocab_size", cfg.vocab_size),
        ("n_head", cfg.n_head),
        ("n_layer", cfg.n_layer),
    );
    let c = widest(cfg);
    let checks: [Check; 5] = [
        // fp32 logits: batch x block x vocab x 4 bytes (x 16 for the loss chain and its gradients).
        (
            mul(&[batch, t.1, v.1, 4, 16]).is_none(),
            "the logits (batch_size x block_size x vocab_size x 4 bytes)",
            vec![b, t, v],
        ),
        // The manual attention path's (B, n_head, T, T) scores, every layer.
        (
            mul(&[batch, h.1, t.1, t.1, 4, 16, l.1]).is_none(),
            "the attention scores (batch_size x n_head x block_size^2 x 4 bytes per layer)",
            vec![b, h, t, l],
        ),
        // Activations: (B, T, 4 * n_embd) fp32 and friends, every layer.
        (
            mul(&[batch, t.1, c.1, 64, l.1]).is_none(),
            "the activations (batch_size x block_size x n_embd per layer)",
            vec![b, t, c, l],
        ),
        // Parameters + gradients + AdamW state: 12 n_embd^2 per layer plus embeddings, 16 bytes each.
        (
            mul(&[c.1, c.1, 13, l.1])
                .and_then(|p| p.checked_add(mul(&[v.1.checked_add(t.1)?, c.1])?))
                .and_then(|p| p.checked_mul(64))
                .is_none(),
            "the parameters, gradients and optimizer state",
            vec![c, l, v],
        ),
        (
            cfg.tokens_per_step().is_none(),
            "the tokens per step (batch_size x block_size x gradient_accumulation_steps)",
            vec![
                ("batch_size", cfg.batch_size),
                t,
                (
                    "gradient_accumulation_steps",
                    cfg.gradient_accumulation_steps,
                ),
            ],
        ),
    ];
    first_overflow(checks, b, blame)
}

/// The widest per-token dimension: the model, the MLP, or all heads' channels.
fn widest(cfg: &TrainConfig) -> (&'static str, u64) {
    [
        ("n_embd", Some(cfg.n_embd)),
        ("intermediate_size", cfg.intermediate_size),
        (
            "head_dim",
            cfg.head_dim.map(|d| d.saturating_mul(cfg.n_head)),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .max_by_key(|x| x.1)
    .unwrap_or(("n_embd", cfg.n_embd))
}

/// The first product that overflows, blamed on its largest factor.
fn first_overflow(checks: [Check; 5], b: (&'static str, u64), blame: &Blame) -> Result<()> {
    for (overflows, what, factors) in checks {
        if overflows {
            let (key, value) = factors.iter().copied().max_by_key(|f| f.1).unwrap_or(b);
            let others: Vec<String> = factors
                .iter()
                .filter(|f| f.0 != key)
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            return Err(Error::bad_value(key, format!(
                "{}{key} = {value}: with {}, {what} overflow 64 bits: expected sizes a GPU can hold",
                blame.at(key),
                others.join(", ")
            )));
        }
    }
    Ok(())
}

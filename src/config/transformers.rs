//! `transformers_version`: which Hugging Face transformers release runs a Hugging Face model,
//! and so which chain of tensors sits between `self.lm_head(...)` and the cross-entropy.
//!
//! The chain changed twice, and the model classes moved at different releases. Read from each
//! release's `*ForCausalLM.forward` and `loss/loss_utils.py::ForCausalLMLoss`
//! (`scripts/hf-loss-chain/extract.py` reads the wheels; `fixtures/hf-loss-chain.json` is its
//! output, and a test holds this table to it):
//!
//! - up to 4.45: the forward upcasts (`logits = logits.float()`, the output keeps the fp32
//!   logits) and copies the shifted logits (`logits[..., :-1, :].contiguous()`);
//!   GPT-NeoX (to 4.48) and Gemma 4.38 copy the shifted logits without upcasting;
//! - 4.46 to 4.48: `self.loss_function` (ForCausalLMLoss) upcasts a local fp32 copy, then
//!   copies the shifted logits (Mistral kept the 4.45 forward through 4.47);
//! - 4.49 on (through 5.25, the last release read): ForCausalLMLoss upcasts, and pads the
//!   labels by one instead of copying the logits (transformers PR #35646).
//!
//! Patch releases are taken to run their minor release's chain (the wheels read are X.Y.0).

use super::ModelType;

/// A transformers release, major.minor; None = the newest chain (4.49 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TransformersVersion(pub Option<(u16, u16)>);

/// The oldest release vramplan reads: Llama's forward is the same from 4.36 back to 4.28, but
/// the other classes were read from 4.36 on.
const OLDEST: (u16, u16) = (4, 36);

/// What runs between the lm_head and the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossChain {
    /// `logits = logits.float()` in the forward (the output holds fp32 logits), then the
    /// shifted fp32 copy.
    UpcastInForward,
    /// The shifted copy of the model-dtype logits; the loss reads them as they are.
    NoUpcast,
    /// ForCausalLMLoss: a local fp32 copy, then the shifted fp32 copy.
    UpcastInLoss,
    /// ForCausalLMLoss: a local fp32 copy; labels padded, no copy of the logits.
    PadLabels,
}

impl LossChain {
    /// The name the fixture (and the report) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LossChain::UpcastInForward => "upcast_in_forward",
            LossChain::NoUpcast => "no_upcast",
            LossChain::UpcastInLoss => "upcast_in_loss",
            LossChain::PadLabels => "pad_labels",
        }
    }

    /// What the chain runs, and in which releases: the report's line.
    pub fn describe(self) -> &'static str {
        match self {
            LossChain::UpcastInForward => {
                "transformers up to 4.45: the forward upcasts the logits to fp32 (the output \
                 keeps them) and the loss reads a shifted fp32 copy"
            }
            LossChain::NoUpcast => {
                "GPT-NeoX up to transformers 4.48 (Gemma in 4.38): the loss reads a shifted copy \
                 of the logits, no upcast"
            }
            LossChain::UpcastInLoss => {
                "transformers 4.46 to 4.48 (Mistral: 4.48): ForCausalLMLoss makes an fp32 copy \
                 and a shifted copy of it"
            }
            LossChain::PadLabels => {
                "transformers 4.49 and later: ForCausalLMLoss makes an fp32 copy and pads the \
                 labels (no copy of the logits)"
            }
        }
    }
}

impl TransformersVersion {
    /// "4.46", "4.46.3", "4.43.0.dev0" or "5.2"; None for anything else.
    pub fn parse(s: &str) -> Option<TransformersVersion> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse::<u16>().ok()?;
        let minor = parts.next()?.parse::<u16>().ok()?;
        // A patch and a dev/rc tag may follow ("4.46.3", "4.43.0.dev0", as config.json writes).
        let rest_ok = parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
        rest_ok.then_some(TransformersVersion(Some((major, minor))))
    }

    /// This release is `v` or later; an unknown release (None) is taken as not, so that what
    /// changed after 4.49 keeps its older, larger form.
    pub fn at_least(self, v: (u16, u16)) -> bool {
        self.0.is_some_and(|have| have >= v)
    }

    pub fn display(self) -> String {
        match self.0 {
            Some((a, b)) => format!("{a}.{b}"),
            None => "4.49 or later".to_string(),
        }
    }

    /// The chain `model` runs in this release.
    pub fn loss_chain(self, model: ModelType) -> LossChain {
        let Some(v) = self.0 else {
            return LossChain::PadLabels;
        };
        if v >= (4, 49) {
            return LossChain::PadLabels;
        }
        match model {
            ModelType::GptNeox => LossChain::NoUpcast,
            ModelType::Gemma if v < (4, 39) => LossChain::NoUpcast,
            ModelType::Mistral if v < (4, 48) => LossChain::UpcastInForward,
            _ if v < (4, 46) => LossChain::UpcastInForward,
            _ => LossChain::UpcastInLoss,
        }
    }

    /// Why this release cannot run `model`, as the "expected ..." half of a message: older
    /// than what was read, or older than the model's class (None: it can).
    pub fn refusal(self, model: ModelType) -> Option<String> {
        let v = self.0?;
        if model == ModelType::Gpt2 {
            return None;
        }
        if v < OLDEST {
            return Some(format!(
                "{}.{} or later (older releases are not modelled) or None",
                OLDEST.0, OLDEST.1
            ));
        }
        let (first, class) = first_release(model)?;
        (v < first).then(|| {
            format!(
                "{}.{} or later: {class} arrived in transformers {}.{}",
                first.0, first.1, first.0, first.1
            )
        })
    }
}

/// The first release with the model's class (the wheels read: phi3 is absent from 4.40.0).
fn first_release(model: ModelType) -> Option<((u16, u16), &'static str)> {
    Some(match model {
        ModelType::Qwen2 => ((4, 37), "Qwen2ForCausalLM"),
        ModelType::Gemma => ((4, 38), "GemmaForCausalLM"),
        ModelType::Phi3 => ((4, 41), "Phi3ForCausalLM"),
        ModelType::Qwen3 => ((4, 51), "Qwen3ForCausalLM"),
        ModelType::Gemma2 => ((4, 42), "Gemma2ForCausalLM"),
        ModelType::Olmo2 => ((4, 47), "Olmo2ForCausalLM"),
        ModelType::Gemma3 => ((4, 50), "Gemma3ForCausalLM"),
        ModelType::Mixtral => ((4, 36), "MixtralForCausalLM"),
        ModelType::Qwen3Moe => ((4, 51), "Qwen3MoeForCausalLM"),
        ModelType::Qwen2Moe => ((4, 40), "Qwen2MoeForCausalLM"),
        ModelType::Gpt2 | ModelType::Llama | ModelType::Mistral | ModelType::GptNeox => {
            return None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minor_and_patch_releases() {
        assert_eq!(
            TransformersVersion::parse("4.46.3"),
            Some(TransformersVersion(Some((4, 46))))
        );
        assert_eq!(
            TransformersVersion::parse("5.2"),
            Some(TransformersVersion(Some((5, 2))))
        );
        assert_eq!(
            TransformersVersion::parse("4.43.0.dev0"),
            Some(TransformersVersion(Some((4, 43))))
        );
        for bad in ["4", "four.46", "4.46.", "", "4.-1"] {
            assert_eq!(TransformersVersion::parse(bad), None, "{bad}");
        }
    }
}

//! What a Gemma 2 / Gemma 3 config.json says beyond Llama's sizes: the config classes'
//! defaults for the sizes a file leaves out (Gemma3ForConditionalGeneration's `text_config`
//! often lists only what differs from Gemma3TextConfig's), the soft-capping values, and which
//! layers slide.

use super::hf_json::{brief, Fields};
use super::model_keys::ModelType;
use super::value::Value;
use crate::error::{Error, Result};
use serde_json::Value as Json;

/// Gemma3ForConditionalGeneration's config.json (`model_type` "gemma3"): the language model
/// is `text_config` (a Gemma3TextConfig); the SigLIP vision tower and the projector are not
/// simulated, and a warning says so.
pub(super) fn text_config<'a>(f: Fields<'a>, warnings: &mut Vec<String>) -> Result<Fields<'a>> {
    let Some(Json::Object(map)) = f.get("text_config") else {
        return Err(Error::new(format!(
            "{}: model_type = \"gemma3\" without a \"text_config\" object: expected the multimodal Gemma 3 config.json, whose text model is under text_config",
            f.origin("model_type")
        )));
    };
    let mut map = map.clone();
    map.insert("model_type".into(), Json::String("gemma3_text".into()));
    warnings.push(format!(
        "{}: model_type = \"gemma3\": the text model (text_config) is simulated; the vision tower (vision_config) and the multimodal projector are not",
        f.origin("model_type")
    ));
    Ok(Fields {
        map,
        text: f.text,
        path: f.path,
    })
}

/// The config class's default for a size the file leaves out: `Gemma2Config` and
/// `Gemma3TextConfig` (configuration_gemma2.py, configuration_gemma3.py) both describe the
/// 2B-class model; other classes' sizes are required.
pub(super) fn class_default(m: ModelType, key: &str) -> Option<u64> {
    let vocab = match m {
        ModelType::Gemma2 => 256_000,
        ModelType::Gemma3 => 262_208,
        _ => return None,
    };
    Some(match key {
        "vocab_size" => vocab,
        "hidden_size" => 2304,
        "intermediate_size" => 9216,
        "num_hidden_layers" => 26,
        "num_attention_heads" => 8,
        "num_key_value_heads" => 4,
        "head_dim" => 256,
        _ => return None,
    })
}

/// Soft-capping caps (null turns one off; absent takes the class default: Gemma 2 50.0 and
/// 30.0, Gemma 3 none), the sliding window (4096 by default) and `global_every`, from
/// `layer_types` when the file lists them, else `sliding_window_pattern` (Gemma 3's class
/// reads it with default 6), else Gemma 2's alternation (2).
pub(super) fn attention_fields(
    f: &Fields,
    m: ModelType,
    put: &mut impl FnMut(&str, &str, Value),
) -> Result<()> {
    let gemma2 = m == ModelType::Gemma2;
    for (key, json_key, default) in [
        ("attn_softcap", "attn_logit_softcapping", 50.0),
        ("final_softcap", "final_logit_softcapping", 30.0),
    ] {
        let cap = match f.map.get(json_key) {
            Some(Json::Null) => None,
            Some(_) => f.float(json_key)?,
            None => gemma2.then_some(default),
        };
        if let Some(c) = cap {
            put(key, json_key, Value::Float(c));
        }
    }
    let window = match f.map.get("sliding_window") {
        Some(Json::Null) => None,
        Some(_) => f.int("sliding_window")?,
        None => Some(4096),
    };
    let Some(window) = window else {
        return Ok(());
    };
    put(
        "sliding_window",
        "sliding_window",
        Value::Int(window.into()),
    );
    let (from, every) = match f.get("layer_types") {
        Some(types) => ("layer_types", global_every(f, types)?),
        None => match f.int("sliding_window_pattern")? {
            Some(k) => ("sliding_window_pattern", Some(k)),
            None => ("model_type", Some(if gemma2 { 2 } else { 6 })),
        },
    };
    if let Some(k) = every {
        put("global_every", from, Value::Int(k.into()));
    }
    Ok(())
}

/// `layer_types` as a period: full attention exactly at the 1-based k-th, 2k-th, ... layers
/// (Some(k)), or none at all (None); any other list is refused.
fn global_every(f: &Fields, types: &Json) -> Result<Option<u64>> {
    let bad = |why: &str| {
        Error::new(format!(
            "{}: \"layer_types\": {}: expected a list of \"sliding_attention\" / \"full_attention\" with full attention every k-th layer ({why})",
            f.origin("layer_types"),
            brief(types)
        ))
    };
    let Some(list) = types.as_array() else {
        return Err(bad("not a list"));
    };
    let mut full = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match t.as_str() {
            Some("full_attention") => full.push(i as u64 + 1),
            Some("sliding_attention") => {}
            _ => return Err(bad("an entry is neither")),
        }
    }
    let Some(&k) = full.first() else {
        return Ok(None);
    };
    let periodic = (1..=list.len() as u64).all(|i| full.contains(&i) == i.is_multiple_of(k));
    if periodic {
        Ok(Some(k))
    } else {
        Err(bad("the pattern does not repeat"))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_hf_str;

    #[test]
    fn layer_types_give_the_period_of_the_global_layers() {
        let text = r#"{"model_type": "gemma3_text", "num_hidden_layers": 6, "sliding_window": 512,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                            "sliding_attention", "sliding_attention", "full_attention"]}"#;
        let c = load_hf_str("c.json", text).unwrap().config;
        assert_eq!(c.global_every, Some(3));
        let sliding: Vec<u32> = (0..6).filter(|l| c.layer_slides(*l)).collect();
        assert_eq!(sliding, [0, 1, 3, 4]);
        // What the file leaves out is Gemma3TextConfig's default; no soft-capping.
        let shape = (
            c.n_embd,
            c.n_head,
            c.kv_heads(),
            c.head_size(),
            c.vocab_size,
        );
        assert_eq!(shape, (2304, 8, 4, 256, 262_208));
        assert_eq!((c.attn_softcap, c.final_softcap), (None, None));
    }

    #[test]
    fn gemma2_defaults_cap_both_and_alternate_and_null_turns_a_cap_off() {
        let c = load_hf_str("c.json", r#"{"model_type": "gemma2"}"#)
            .unwrap()
            .config;
        let got = (
            c.attn_softcap,
            c.final_softcap,
            c.sliding_window,
            c.global_every,
        );
        assert_eq!(got, (Some(50.0), Some(30.0), Some(4096), Some(2)));
        assert!(c.layer_slides(0) && !c.layer_slides(1));
        let text = r#"{"model_type": "gemma2", "final_logit_softcapping": null}"#;
        let c = load_hf_str("c.json", text).unwrap().config;
        assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), None));
    }
}

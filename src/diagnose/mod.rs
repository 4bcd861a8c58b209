//! `vramplan diagnose`: read a pasted OOM log, say what failed and what to change.
//!
//! The flow: [`normalize`] cleans the paste (prefixes, colours, interleaved ranks, and the
//! breaks a terminal or a page made at a fixed width, see [`wrap`]),
//! `formats` scan it for every message of every runtime, the first VRAM failure is the one
//! diagnosed (later ones on other GPUs are listed), [`phase`] reads the stack that raised it,
//! [`culprit`] matches the request against the simulator's tensors (or the shapes the log
//! prints, or GPT-shaped hypotheses), [`causes`] ranks what the numbers show, and [`fixes`]
//! adds what needs no config to the fixes `suggest` computed.
//!
//! `parse` never panics: every figure goes through checked integer arithmetic and a figure
//! too large for u64 becomes null with a `bogus_figure` cause.

pub mod causes;
pub mod culprit;
pub mod fixes;
mod formats;
pub mod normalize;
pub(crate) mod pattern;
pub mod phase;
pub mod pytorch_version;
pub mod render;
pub mod size;
mod structural;
pub mod types;
pub mod vllm_fixes;
pub mod wrap;

pub use culprit::{gpt_hypotheses, match_request, match_request_with, Candidate, Match, Request};
pub use pytorch_version::{MessageLayout, VersionRange};
pub use render::render_text;
pub use types::{Cause, CauseKind, Culprit, Facts, Fix, Format, OtherProcess, OtherReport, Phase};

use formats::Report;
use serde::{Deserialize, Serialize};

/// What the caller knows about the run: the simulator's tensors at the failing phase (birth
/// order), its live set there, and `suggest`'s fixes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchContext {
    pub candidates: Vec<Candidate>,
    pub simulated_live_bytes_at_phase: Option<u64>,
    pub fixes: Vec<Fix>,
    /// The run's own arithmetic behind the failure (vLLM's KV-cache budget), when known.
    pub explanation: Option<String>,
    /// What the config's simulation says that the log contradicts, shown first among the notes.
    pub notes: Vec<String>,
}

/// The diagnosis; serialises to issue 4's `--json` names. `message_layout`, `pytorch_version`,
/// `gpu_candidates`, `hypotheses`, `other_reports` and `notes` are additions, left out of the JSON when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub is_oom: bool,
    pub format: Option<Format>,
    /// For PyTorch's caching-allocator message: the layout that was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_layout: Option<MessageLayout>,
    /// For PyTorch's caching-allocator message: the releases that could have printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch_version: Option<VersionRange>,
    pub device: Option<String>,
    /// The cards the log's total capacity could be, when no card was named (`--gpu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_candidates: Vec<String>,
    pub phase: Phase,
    pub facts: Facts,
    pub culprit: Option<Culprit>,
    pub causes: Vec<Cause>,
    pub fixes: Vec<Fix>,
    /// Shapes a GPT could have had at this size, when no config was given (marked hypothesis).
    #[serde(default)]
    pub hypotheses: Vec<Match>,
    /// Further failures in the same paste (other ranks, other GPUs).
    #[serde(default)]
    pub other_reports: Vec<OtherReport>,
    /// What the parser inferred or noticed (a recovered failure, the process taken to be this one).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Diagnosis {
    fn nothing(note: &str) -> Diagnosis {
        Diagnosis {
            is_oom: false,
            format: None,
            message_layout: None,
            pytorch_version: None,
            device: None,
            gpu_candidates: Vec::new(),
            phase: Phase::Unknown,
            facts: Facts::default(),
            culprit: None,
            causes: Vec::new(),
            fixes: Vec::new(),
            hypotheses: Vec::new(),
            other_reports: Vec::new(),
            notes: vec![note.to_string()],
        }
    }
}

/// Diagnose from the log alone.
pub fn parse(text: &str) -> Diagnosis {
    analyze(text, None)
}

/// Diagnose with what the simulator and `suggest` know about the run.
pub fn analyze(text: &str, ctx: Option<&MatchContext>) -> Diagnosis {
    let n = normalize::normalize(text);
    let reports = formats::scan(text, &n);
    let primary = primary(&reports, &n);
    let Some(primary) = primary else {
        let mut d = Diagnosis::nothing("no out-of-memory message found");
        d.notes.extend(reports.iter().flat_map(|r| r.notes.clone()));
        return d;
    };
    if let Some(what) = &primary.not_vram {
        let mut d = Diagnosis::nothing("not a VRAM out-of-memory");
        d.format = (!primary.unnamed).then_some(primary.format);
        d.causes.push(Cause {
            kind: CauseKind::NotVram,
            evidence: what.clone(),
        });
        return d;
    }
    let mut format = primary.format;
    // PyTorch's message inside a vLLM worker: the serving engine's budget is the story.
    if matches!(format, Format::Pytorch1 | Format::Pytorch2) && primary.in_vllm {
        format = Format::Vllm;
    }
    let phase = phase::classify(&phase::frames_for(&n, primary.at))
        .or(primary.phase_hint)
        .unwrap_or(Phase::Unknown);
    let facts = primary.facts.clone();
    let (culprit, live_twin, hypotheses) = pick_culprit(primary, format, phase, &facts, ctx);
    let ctx_fixes: &[Fix] = ctx.map_or(&[], |c| &c.fixes);
    let ev = causes::Evidence {
        facts: &facts,
        format,
        phase,
        bogus: &primary.bogus,
        culprit: culprit.as_ref(),
        live_twin: live_twin.as_deref(),
        simulated_live: ctx.and_then(|c| c.simulated_live_bytes_at_phase),
        ctx_fixes,
        explanation: ctx.and_then(|c| c.explanation.as_deref()),
    };
    let mut causes = causes::rank(&ev);
    if causes.is_empty() {
        causes.push(fallback_cause(&facts, phase));
    }
    let fixes = all_fixes(ctx_fixes, &causes, &facts, (format, phase));
    let mut notes: Vec<String> = ctx.map_or_else(Vec::new, |c| c.notes.clone());
    notes.extend(primary.notes.iter().cloned());
    let other_reports = other_reports(&reports, primary);
    if !other_reports.is_empty() {
        notes.push(format!(
            "{} more out-of-memory report(s) in this log (other ranks or GPUs): see other_reports",
            other_reports.len()
        ));
    }
    let (message_layout, pytorch_version) = match &primary.pytorch {
        Some((layout, version)) => (*layout, Some(version.clone())),
        None => (None, None),
    };
    Diagnosis {
        is_oom: true,
        format: Some(format),
        message_layout,
        pytorch_version,
        device: primary.device.clone(),
        gpu_candidates: Vec::new(),
        phase,
        facts,
        culprit,
        causes,
        fixes,
        hypotheses,
        other_reports,
        notes,
    }
}

/// The first VRAM failure in the paste's own order (streams are regrouped in `n.text`), else
/// the first failure that is not VRAM's.
fn primary<'a>(reports: &'a [Report], n: &normalize::Normalized) -> Option<&'a Report> {
    let order = |r: &Report| (n.lines.get(n.line_at(r.at)).map_or(0, |l| l.idx), r.at);
    reports
        .iter()
        .filter(|r| r.is_oom)
        .min_by_key(|r| order(r))
        .or_else(|| {
            reports
                .iter()
                .filter(|r| r.not_vram.is_some())
                .min_by_key(|r| order(r))
        })
}

/// The other out-of-memory reports in the paste (other ranks or GPUs), each device and set of
/// figures once; a bare follow-up ("CUDA error: out of memory") adds nothing.
fn other_reports(reports: &[Report], primary: &Report) -> Vec<OtherReport> {
    let mut other_reports: Vec<OtherReport> = Vec::new();
    for r in reports.iter().filter(|r| r.is_oom && r.at != primary.at) {
        let same = |dev: &Option<String>, f: &Facts| *dev == primary.device && *f == primary.facts;
        if same(&r.device, &r.facts)
            || other_reports
                .iter()
                .any(|o| o.device == r.device && o.facts == r.facts)
        {
            continue;
        }
        // A bare follow-up ("CUDA error: out of memory" after the detailed message) adds nothing.
        if r.facts.is_empty() && r.device.is_none() {
            continue;
        }
        other_reports.push(OtherReport {
            format: r.format,
            device: r.device.clone(),
            facts: r.facts.clone(),
        });
    }
    other_reports
}

/// The simulator's fixes first, then the generic ones not already among them.
fn all_fixes(
    ctx_fixes: &[Fix],
    causes: &[Cause],
    facts: &Facts,
    (format, phase): (Format, Phase),
) -> Vec<Fix> {
    let mut fixes: Vec<Fix> = ctx_fixes.to_vec();
    for f in fixes::generic(causes, facts, format, phase) {
        if !fixes.iter().any(|x| x.change == f.change) {
            fixes.push(f);
        }
    }
    fixes
}

/// The culprit: the simulator's candidate (with the equal-sized tensor already live, if any),
/// else a tensor the log prints, else GPT-shaped hypotheses.
fn pick_culprit(
    primary: &Report,
    format: Format,
    phase: Phase,
    facts: &Facts,
    ctx: Option<&MatchContext>,
) -> (Option<Culprit>, Option<String>, Vec<Match>) {
    let Some(tried) = facts.tried_to_allocate_bytes else {
        return (None, None, Vec::new());
    };
    let req = if matches!(format, Format::Pytorch1 | Format::Pytorch2 | Format::Vllm) {
        Request::pytorch(tried)
    } else {
        Request {
            bytes: tried,
            half_ulp: size::pytorch_half_ulp(tried),
            caching_allocator: false,
        }
    };
    if let Some(ctx) = ctx.filter(|c| !c.candidates.is_empty()) {
        let matches = match_request_with(&req, &ctx.candidates, Some(phase));
        if let Some(best) = matches.first() {
            // Equal sizes at an agreeing phase: if one of them fits inside what is already
            // allocated, that one is live and the request is the later one.
            let peers: Vec<&Match> = matches
                .iter()
                .filter(|m| m.bytes == best.bytes && m.phase == best.phase)
                .collect();
            let allocated = facts.allocated_by_framework_bytes.unwrap_or(0);
            let (chosen, twin) = if peers.len() >= 2 && allocated >= best.bytes {
                (peers[peers.len() - 1], Some(peers[0].name.clone()))
            } else {
                // The simulation saw a same-sized tensor alive when this one was asked for.
                (best, best.live_twin.clone())
            };
            let culprit = Culprit {
                name: chosen.name.clone(),
                shape: chosen.shape.clone(),
                dtype: chosen.dtype.clone(),
                bytes: chosen.bytes,
                simulated_allocated_before_bytes: chosen.allocated_before_bytes,
            };
            return (Some(culprit), twin, Vec::new());
        }
    }
    let from_log = primary.tensors.iter().find(|t| {
        let near = |x: u64| x.abs_diff(tried) <= req.half_ulp + 1;
        near(t.bytes) || (req.caching_allocator && near(culprit::pytorch_alloc_size(t.bytes)))
    });
    if let Some(t) = from_log {
        let c = Culprit {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype.clone(),
            bytes: t.bytes,
            simulated_allocated_before_bytes: None,
        };
        return (Some(c), None, Vec::new());
    }
    // Logits-shaped guesses make sense where logits are made, not while loading weights.
    let logits_phase = !matches!(phase, Phase::ModelLoad | Phase::Init | Phase::Optimizer);
    let hypotheses =
        if req.caching_allocator && ctx.is_none() && logits_phase && tried >= 8 * crate::units::MIB
        {
            gpt_hypotheses(&req, 4)
        } else {
            Vec::new()
        };
    (None, None, hypotheses)
}

fn fallback_cause(facts: &Facts, phase: Phase) -> Cause {
    if phase == Phase::ModelLoad {
        return Cause {
            kind: CauseKind::ModelTooLarge,
            evidence: "the failure came while loading weights: they do not fit this device".into(),
        };
    }
    let evidence = match facts.tried_to_allocate_bytes {
        Some(t) => format!(
            "the {} request failed on a GPU whose memory the log does not itemise; pass \
             --config to compare with what the run should hold",
            crate::units::human(t)
        ),
        None => "the log states no sizes; pass --config to compare with what the run should \
                 hold at this phase"
            .into(),
    };
    Cause {
        kind: CauseKind::UnexplainedMemory,
        evidence,
    }
}

//! The reference figures (shared/reference/torch-ref-calibration.csv) against the simulator.
//!
//! Each row is a nanoGPT configuration and the bytes PyTorch allocates in each phase, counted
//! the way `torch.cuda.max_memory_allocated()` counts them (`sim_*` columns: whole allocator
//! blocks). This module turns a row into a TrainConfig, runs the simulator with the reference's
//! accounting, and reports the relative error of each figure.

use crate::budget::default_cublas_workspace_bytes;
use crate::config::{Precision, TrainConfig};
use crate::error::{Error, Result};
use crate::run::simulate;
use crate::sim::runtime::{Runtime, RuntimeKind};
use crate::sim::{replay, DType, MemoryProfile, Phase};

/// One compared figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub reference: u64,
    pub simulated: u64,
}

impl Figure {
    pub fn relative_error(&self) -> f64 {
        (self.simulated as f64 - self.reference as f64) / self.reference as f64
    }
}

#[derive(Debug, Clone)]
pub struct RowResult {
    pub label: String,
    pub figures: Vec<Figure>,
}

pub const ALLOCATED_FIGURES: [&str; 4] = ["init", "train_peak", "eval_peak", "eval2_peak"];
pub const RESERVED_FIGURE: &str = "peak_reserved";

/// Parse the CSV text and compare every row.
pub fn evaluate(csv: &str) -> Result<Vec<RowResult>> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::new("calibration file is empty"))?
        .split(',')
        .map(str::trim)
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let row = Row {
            header: &header,
            fields: line.split(',').map(str::trim).collect(),
            number: i + 2,
        };
        let cfg = row.config()?;
        let arch = row.get("arch")?;
        let major: u32 = arch
            .trim_start_matches("sm")
            .parse::<u32>()
            .map_or(9, |cc| cc / 10);
        let tl = simulate(&cfg, reference_runtime(&cfg, major))?;
        let figures = row.figures(&replay(&tl, false))?;
        out.push(RowResult {
            label: row.label(&cfg)?,
            figures,
        });
    }
    Ok(out)
}

/// One row of the calibration file, read by column name.
struct Row<'a> {
    header: &'a [&'a str],
    fields: Vec<&'a str>,
    /// The line number in the file (the header is line 1).
    number: usize,
}

impl<'a> Row<'a> {
    fn get(&self, name: &str) -> Result<&'a str> {
        let c = self
            .header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error::new(format!("calibration file has no column `{name}`")))?;
        self.fields
            .get(c)
            .copied()
            .ok_or_else(|| Error::new(format!("row {}: missing `{name}`", self.number)))
    }

    fn num(&self, name: &str) -> Result<u64> {
        self.get(name)?
            .parse::<u64>()
            .map_err(|_| Error::new(format!("row {}: `{name}` is not an integer", self.number)))
    }

    /// The reference run's config (nanoGPT's GPT, eager).
    fn config(&self) -> Result<TrainConfig> {
        Ok(TrainConfig {
            n_layer: self.num("n_layer")?,
            n_head: self.num("n_head")?,
            n_embd: self.num("n_embd")?,
            block_size: self.num("block_size")?,
            batch_size: self.num("batch")?,
            vocab_size: self.num("vocab_size")?,
            gradient_accumulation_steps: self.num("grad_accum")?,
            dtype: if self.get("dtype")? == "fp32" {
                Precision::Float32
            } else {
                Precision::BFloat16
            },
            flash: self.get("flash")? == "1",
            dropout: self
                .get("dropout")?
                .parse()
                .map_err(|_| Error::new(format!("row {}: bad dropout", self.number)))?,
            bias: self.get("bias")? == "1",
            compile: false,
            ..TrainConfig::default()
        })
    }

    /// Each reference figure beside the simulated one.
    fn figures(&self, p: &MemoryProfile) -> Result<Vec<Figure>> {
        let train = [Phase::Forward, Phase::Backward, Phase::Optimizer]
            .iter()
            .map(|&ph| p.phase(ph).peak_allocated)
            .max()
            .unwrap_or(0);
        let figure = |name, column, simulated| -> Result<Figure> {
            Ok(Figure {
                name,
                reference: self.num(column)?,
                simulated,
            })
        };
        Ok(vec![
            figure(
                "init",
                "sim_init_alloc_bytes",
                p.phase(Phase::Init).end_allocated,
            )?,
            figure("train_peak", "sim_train_peak_alloc_bytes", train)?,
            figure(
                "eval_peak",
                "sim_eval_peak_alloc_bytes",
                p.phase(Phase::Eval).peak_allocated,
            )?,
            figure(
                "eval2_peak",
                "sim_eval2_peak_alloc_bytes",
                p.phase(Phase::EvalAfterStep).peak_allocated,
            )?,
            figure(RESERVED_FIGURE, "sim_peak_reserved_bytes", p.peak_reserved)?,
        ])
    }

    fn label(&self, cfg: &TrainConfig) -> Result<String> {
        Ok(format!(
            "L{} H{} C{} T{} B{} {} {} d{} {} V{} ga{} {}",
            cfg.n_layer,
            cfg.n_head,
            cfg.n_embd,
            cfg.block_size,
            cfg.batch_size,
            self.get("dtype")?,
            if cfg.flash { "flash" } else { "manual" },
            cfg.dropout,
            if cfg.bias { "bias" } else { "nobias" },
            cfg.vocab_size,
            cfg.gradient_accumulation_steps,
            self.get("arch")?
        ))
    }
}

/// PyTorch eager, as the reference ran it, on an `sm{major}x` card.
pub fn reference_runtime(cfg: &TrainConfig, major: u32) -> Runtime {
    Runtime {
        kind: RuntimeKind::PytorchEager,
        autocast: DType::autocast_of(cfg.dtype),
        cublas_workspace_bytes: default_cublas_workspace_bytes((major, 0)),
        cublaslt_workspace_bytes: crate::budget::CUBLASLT_WORKSPACE_BYTES,
        expandable_segments: false,
        flash_attention: major >= 8,
    }
}

/// Median and worst absolute relative error of the named figures over all rows.
pub fn summary(rows: &[RowResult], names: &[&str]) -> (f64, f64) {
    let mut errs: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.figures.iter())
        .filter(|f| names.contains(&f.name))
        .map(|f| f.relative_error().abs())
        .collect();
    if errs.is_empty() {
        return (0.0, 0.0);
    }
    errs.sort_by(|a, b| a.total_cmp(b));
    let median = if errs.len() % 2 == 1 {
        errs[errs.len() / 2]
    } else {
        (errs[errs.len() / 2 - 1] + errs[errs.len() / 2]) / 2.0
    };
    (median, *errs.last().unwrap_or(&0.0))
}

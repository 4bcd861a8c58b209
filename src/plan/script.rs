//! How the user starts their run, and what a printed command must set in its environment:
//! shared by every way `suggest` prints a change (`command`, `convention`, `hf_args`, `multi`).

use crate::config::TrainConfig;

/// How the user starts train.py: the config file on its command line and what that file alone
/// sets, so a printed command repeats the user's own overrides (`--compile=False`) as well as
/// the suggested changes.
#[derive(Debug, Clone)]
pub struct Script {
    pub config_path: Option<String>,
    /// The config the file gives before any `--key=value` (train.py's defaults without a file).
    pub file_config: TrainConfig,
}

impl Script {
    /// train.py with no config file.
    pub fn defaults() -> Script {
        Script {
            config_path: None,
            file_config: TrainConfig::default(),
        }
    }
}

/// The environment a command needs that the user's run did not set: expandable segments.
pub fn env_prefix(cfg: &TrainConfig, base: &TrainConfig) -> &'static str {
    if cfg.expandable_segments() && !base.expandable_segments() {
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    } else {
        ""
    }
}

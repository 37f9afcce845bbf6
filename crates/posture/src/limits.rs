//! The bounds on what one event may carry, shared by `posture run` and `posture evaluate`
//! (embedded mode must reject exactly what the pipeline rejects, or the two would differ).

use posture_core::EngineConfig;

/// Bounds on one event: what exceeds them is rejected as invalid (dead-lettered by `posture
/// run` with the reason, counted and reported by `posture evaluate`), and the rest goes on.
#[derive(clap::Args, Clone, Debug)]
pub struct InputLimits {
    /// Events with more settings than this are rejected.
    #[arg(long, env = "POSTURE_MAX_SETTINGS", default_value_t = 10_000, value_name = "N")]
    pub max_settings: usize,
    /// Events whose inventory lists more device groups than this are
    /// rejected (every group is a score scope with its own counts and rows).
    #[arg(long, env = "POSTURE_MAX_GROUPS", default_value_t = 64, value_name = "N")]
    pub max_groups: usize,
    /// Events whose inventory lists more tags than this are rejected.
    #[arg(long, env = "POSTURE_MAX_TAGS", default_value_t = 64, value_name = "N")]
    pub max_tags: usize,
    /// Events with an inventory name (group, tag, OS family or version,
    /// host name) longer than this many bytes are rejected.
    #[arg(long, env = "POSTURE_MAX_NAME_BYTES", default_value_t = 256, value_name = "BYTES")]
    pub max_name_bytes: usize,
}

impl InputLimits {
    /// The engine settings with these bounds and the given inactivity window.
    pub fn engine_config(&self, inactivity_days: u32) -> EngineConfig {
        EngineConfig {
            inactivity_window_ms: inactivity_days as i64 * 86_400_000,
            max_settings: self.max_settings,
            max_groups: self.max_groups,
            max_tags: self.max_tags,
            max_name_bytes: self.max_name_bytes,
            ..EngineConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_engines() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            limits: InputLimits,
        }
        let cli = <Cli as clap::Parser>::parse_from(["posture"]);
        let (got, want) = (cli.limits.engine_config(30), EngineConfig::default());
        assert_eq!(
            (got.max_settings, got.max_groups, got.max_tags, got.max_name_bytes),
            (want.max_settings, want.max_groups, want.max_tags, want.max_name_bytes)
        );
        assert_eq!(got.inactivity_window_ms, want.inactivity_window_ms);
    }

    #[test]
    fn the_reserved_scope_name_is_the_metrics_overflow_label() {
        // A tenant or group named like the label of aggregated series is refused by the engine.
        assert_eq!(posture_core::RESERVED_SCOPE_NAME, posture_metrics::OVERFLOW);
    }
}

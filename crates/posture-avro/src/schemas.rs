//! The Avro schemas of `schemas/avro/`, embedded at build time, and parsed
//! once. Registering them with a schema registry, or comparing against a
//! registry's copy, starts from these texts.

use apache_avro::Schema;
use std::sync::OnceLock;

/// `schemas/avro/config_change.avsc`: the input event, `posture.v1.ConfigChange`.
pub const CONFIG_CHANGE_AVSC: &str = include_str!("../../../schemas/avro/config_change.avsc");

/// `schemas/avro/config_change.v2.avsc`: version 2 of the input event, FULL-compatible with
/// version 1 (added and removed optional fields, a new `ConfigSource` symbol). posture reads it
/// through a [`ResolutionPlan`](crate::resolve::ResolutionPlan) when a schema registry names it;
/// agents may write it to a topic posture reads with a registry.
pub const CONFIG_CHANGE_V2_AVSC: &str = include_str!("../../../schemas/avro/config_change.v2.avsc");

/// `schemas/avro/score_delta.avsc`: one control-state transition, `posture.v1.ScoreDelta`.
pub const SCORE_DELTA_AVSC: &str = include_str!("../../../schemas/avro/score_delta.avsc");

/// `schemas/avro/alert.avsc`: a score-drop alert, `posture.v1.ScoreDropAlert`.
pub const ALERT_AVSC: &str = include_str!("../../../schemas/avro/alert.avsc");

fn parsed(cell: &'static OnceLock<Schema>, text: &str) -> &'static Schema {
    cell.get_or_init(|| Schema::parse_str(text).expect("embedded schema is valid (checked by tests)"))
}

/// The parsed `ConfigChange` schema (the reader schema of every decode path).
pub fn config_change() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    parsed(&S, CONFIG_CHANGE_AVSC)
}

/// [`CONFIG_CHANGE_V2_AVSC`], parsed.
pub fn config_change_v2() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    parsed(&S, CONFIG_CHANGE_V2_AVSC)
}

/// The parsed `ScoreDelta` schema.
pub fn score_delta() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    parsed(&S, SCORE_DELTA_AVSC)
}

/// The parsed `ScoreDropAlert` schema.
pub fn alert() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    parsed(&S, ALERT_AVSC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::Schema as S;

    #[test]
    fn schemas_parse_with_the_spec_field_order() {
        let names = |s: &Schema| match s {
            S::Record(r) => (
                r.name.fullname(None),
                r.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            ),
            _ => panic!("not a record"),
        };
        let (n, f) = names(config_change());
        assert_eq!(n, "posture.v1.ConfigChange");
        assert_eq!(
            f,
            [
                "event_id",
                "tenant_id",
                "device_id",
                "observed_at",
                "sequence",
                "source",
                "kind",
                "device",
                "settings"
            ]
        );
        assert_eq!(names(score_delta()).0, "posture.v1.ScoreDelta");
        assert_eq!(names(score_delta()).1.len(), 19);
        assert_eq!(names(alert()).0, "posture.v1.ScoreDropAlert");
    }
}

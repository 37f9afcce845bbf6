//! What the engine checks before an event touches any state: the contract of an event
//! (ids, kinds, times, settings) and the bounds of its inventory.

use super::*;

impl Engine {
    pub(super) fn validate(&self, ev: &ConfigChange) -> Result<(), Rejected> {
        let bad = |m: &str| Err(Rejected::Invalid(m.to_string()));
        if ev.event_id.is_empty() {
            return bad("empty event_id");
        }
        if ev.tenant_id.is_empty() {
            return bad("empty tenant_id");
        }
        if ev.device_id.is_empty() {
            return bad("empty device_id");
        }
        if ev.observed_at < 0 {
            return bad("observed_at before 1970");
        }
        let (t0, t1) = self.cfg.valid_time_ms;
        if ev.observed_at < t0 || ev.observed_at >= t1 {
            return Err(Rejected::Invalid(format!(
                "observed_at {} is outside the accepted range [{t0}, {t1}) ms",
                ev.observed_at
            )));
        }
        let max = self.cfg.max_value_bytes;
        for (what, v) in [
            ("event_id", &ev.event_id),
            ("tenant_id", &ev.tenant_id),
            ("device_id", &ev.device_id),
        ] {
            if v.len() > max {
                return Err(Rejected::Invalid(format!(
                    "{what} is {} bytes, more than {max}",
                    v.len()
                )));
            }
        }
        for s in &ev.settings {
            let size = s.key.len()
                + match &s.value {
                    crate::event::Value::String(v) => v.len(),
                    crate::event::Value::Array(v) => v.iter().map(String::len).sum(),
                    _ => 0,
                };
            if size > max {
                return Err(Rejected::Invalid(format!(
                    "setting {:?} is {size} bytes, more than {max}",
                    s.key.chars().take(64).collect::<String>()
                )));
            }
        }
        if ev.settings.len() > self.cfg.max_settings {
            return Err(Rejected::Invalid(format!(
                "{} settings, more than the limit of {}",
                ev.settings.len(),
                self.cfg.max_settings
            )));
        }
        if ev.kind == ChangeKind::Retire && !ev.settings.is_empty() {
            return bad("a RETIRE event carries no settings");
        }
        if let Some(problem) = scope_name_problem(&ev.tenant_id) {
            return Err(Rejected::Invalid(format!("tenant_id {:?} {problem}", ev.tenant_id)));
        }
        if let Some(d) = &ev.device {
            self.validate_inventory(d)?;
        }
        if ev.settings.iter().any(|s| s.key.is_empty()) {
            return bad("a setting with an empty key");
        }
        Ok(())
    }

    /// The bounds on an inventory ([`EngineConfig::max_groups`], `max_tags`, `max_name_bytes`)
    /// and the validity of its group names ([`scope_name_problem`]).
    pub(super) fn validate_inventory(&self, d: &DeviceInfo) -> Result<(), Rejected> {
        let invalid = |m: String| Err(Rejected::Invalid(m));
        if d.os_family.is_empty() {
            return invalid("device.os_family is empty".into());
        }
        for (what, n, max) in [
            ("groups", d.groups.len(), self.cfg.max_groups),
            ("tags", d.tags.len(), self.cfg.max_tags),
        ] {
            if n > max {
                return invalid(format!("device.{what} lists {n} names, more than the limit of {max}"));
            }
        }
        let max = self.cfg.max_name_bytes;
        let names = [("device.os_family", &d.os_family), ("device.os_version", &d.os_version)]
            .into_iter()
            .chain(d.hostname.iter().map(|h| ("device.hostname", h)))
            .chain(d.groups.iter().map(|g| ("a name in device.groups", g)))
            .chain(d.tags.iter().map(|t| ("a name in device.tags", t)));
        for (what, v) in names {
            if v.len() > max {
                let head: String = v.chars().take(32).collect();
                return invalid(format!("{what} ({head:?}...) is {} bytes, more than {max}", v.len()));
            }
        }
        for g in &d.groups {
            if let Some(problem) = scope_name_problem(g) {
                return invalid(format!("device group {g:?} {problem}"));
            }
        }
        Ok(())
    }
}

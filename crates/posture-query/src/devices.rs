//! The device views of the query layer: the states of a control across a scope's devices (the
//! misconfigured-devices list), the devices behind a control, inventories, and one device's
//! controls with the evidence behind each.

use super::*;

impl Query {
    /// The current state of the controls of one device, or of every device
    /// (`device = None`) of the tenant, optionally one control and one state.
    pub async fn control_states(
        &self,
        tenant: &str,
        device: Option<&str>,
        control: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<DeviceControl>, QueryError> {
        if let Some(c) = control {
            self.control(c)?;
        }
        if let Some(s) = state {
            if !["PASS", "FAIL", "UNKNOWN", "NOT_APPLICABLE", "EXCEPTED"].contains(&s) {
                return Err(QueryError::BadRequest(format!(
                    "state {s:?}: expected PASS, FAIL, UNKNOWN, NOT_APPLICABLE or EXCEPTED"
                )));
            }
        }
        let rows: Vec<StateRow> = self
            .rows(
                "control_state_current",
                &[
                    ("tenant", tenant.into()),
                    ("device", device.unwrap_or_default().into()),
                    ("control", control.unwrap_or_default().into()),
                    ("state", state.unwrap_or_default().into()),
                ],
            )
            .await?;
        let rows: Vec<StateRow> = rows
            .into_iter()
            .filter(|r| control.is_none_or(|c| r.control == c) && state.is_none_or(|s| enum_name(STATES, r.state) == s))
            .collect();
        // When and why each listed control last changed: the listed devices' own transitions.
        let mut devices: Vec<String> = rows.iter().map(|r| r.device.clone()).collect();
        devices.dedup();
        let mut changes: HashMap<(String, String), (i8, i64)> = HashMap::new();
        for chunk in devices.chunks(1000) {
            let part: Vec<ChangeRow> = self
                .rows(
                    "control_changes",
                    &[
                        ("tenant", tenant.into()),
                        ("devices", chunk.to_vec().into()),
                        ("control", control.unwrap_or_default().into()),
                    ],
                )
                .await?;
            changes.extend(
                part.into_iter()
                    .map(|c| ((c.device, c.control), (c.reason, c.since_ms))),
            );
        }
        // A cell that never changed (the initial NOT_APPLICABLE or UNKNOWN of a device's first
        // event) is not listed: the devices and controls listed are those with a transition.
        let mut out: Vec<DeviceControl> = rows
            .into_iter()
            .filter_map(|r| {
                let (reason, since_ms) = *changes.get(&(r.device.clone(), r.control.clone()))?;
                let c = self.catalog.control_idx(&r.control)?;
                let ctl = &self.catalog.controls[c as usize];
                Some(DeviceControl {
                    device: r.device,
                    title: ctl.title.clone(),
                    check: check_text(&self.catalog, c),
                    points: ctl.points as f64 / MICROS,
                    control: r.control,
                    category: r.category,
                    state: enum_name(STATES, r.state),
                    raw_state: enum_name(STATES, r.raw_state),
                    exception: enum_name(EXCEPTIONS, r.exception),
                    counted: r.counted != 0,
                    reason: enum_name(REASONS, reason),
                    since: format_time(since_ms),
                    settings: BTreeMap::new(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device).then(a.control.cmp(&b.control)));
        Ok(out)
    }

    /// The devices of `control` in `state` (FAIL: only those that count in
    /// scores, the misconfigured devices of the improvement opportunity),
    /// optionally only those in device group `group` and of OS family `os`
    /// (by each device's latest inventory).
    pub async fn control_devices(
        &self,
        tenant: &str,
        control: &str,
        state: &str,
        group: Option<&str>,
        os: Option<&str>,
    ) -> Result<Vec<DeviceControl>, QueryError> {
        let mut v = self.control_states(tenant, None, Some(control), Some(state)).await?;
        if state == "FAIL" {
            v.retain(|d| d.counted);
        }
        if group.is_some() || os.is_some() {
            let inv: BTreeMap<String, Inventory> = self
                .inventories(tenant, None)
                .await?
                .into_iter()
                .map(|i| (i.device.clone(), i))
                .collect();
            v.retain(|d| {
                inv.get(&d.device).is_some_and(|i| {
                    group.is_none_or(|g| i.groups.iter().any(|x| x == g))
                        && os.is_none_or(|o| i.os_family.eq_ignore_ascii_case(o))
                })
            });
        }
        Ok(v)
    }

    /// The latest inventory of one device, or of every device of the tenant.
    pub async fn inventories(&self, tenant: &str, device: Option<&str>) -> Result<Vec<Inventory>, QueryError> {
        self.rows(
            "device_inventory_current",
            &[("tenant", tenant.into()), ("device", device.unwrap_or_default().into())],
        )
        .await
    }

    /// One device: its score at `at_ms` (from its device deltas) and the
    /// current state of each of its controls.
    pub async fn device(&self, tenant: &str, device: &str, at_ms: i64) -> Result<DeviceReport, QueryError> {
        if device.is_empty() {
            return Err(QueryError::BadRequest("the device id is empty".into()));
        }
        let scores: Vec<DeviceScoreRow> = self
            .rows(
                "device_scores_at",
                &[
                    ("tenant", tenant.into()),
                    ("device", device.into()),
                    ("at_ms", at_ms.into()),
                ],
            )
            .await?;
        let mut controls = self.control_states(tenant, Some(device), None, None).await?;
        // The evidence: each setting the control's check reads, as the device has it now.
        let settings: Vec<SettingRow> = self
            .rows(
                "device_settings_current",
                &[("tenant", tenant.into()), ("device", device.into())],
            )
            .await?;
        let snapshot = settings.iter().find(|s| s.key.is_empty()).map_or(i64::MIN, |s| s.seq);
        let current: BTreeMap<&str, serde_json::Value> = settings
            .iter()
            .filter(|s| !s.key.is_empty() && s.removed == 0 && s.seq >= snapshot)
            .map(|s| {
                (
                    s.key.as_str(),
                    serde_json::from_str(&s.value).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        for c in &mut controls {
            if let Some(idx) = self.catalog.control_idx(&c.control) {
                for key in check_keys(&self.catalog, idx) {
                    let v = current.get(key.as_str()).cloned().unwrap_or(serde_json::Value::Null);
                    c.settings.insert(key, v);
                }
            }
        }
        let Some(s) = scores.into_iter().next().filter(|_| !controls.is_empty()) else {
            return Err(QueryError::NotFound(format!(
                "tenant {tenant:?} has no device {device:?}"
            )));
        };
        let inventory = self.inventories(tenant, Some(device)).await?.into_iter().next();
        Ok(DeviceReport {
            tenant: tenant.to_string(),
            device: device.to_string(),
            inventory,
            points: s.score_with as f64 / MICROS,
            max_points: s.max_score_with as f64 / MICROS,
            percent: s.percent_with,
            without_exceptions: HistoryPart {
                points: s.score_without as f64 / MICROS,
                max_points: s.max_score_without as f64 / MICROS,
                percent: s.percent_without,
            },
            controls,
        })
    }
}

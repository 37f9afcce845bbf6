//! What-if: the score a scope would have if some devices' controls changed state (the points a
//! recommendation adds), scored with the core's own rules.

use super::*;

impl Query {
    /// The exact score of `report_scope` at `at_ms` if `change` were made for
    /// `control` on every device of `applied_to` (a group of the tenant, or
    /// the tenant). `applied_to` must be `report_scope` or a group inside the
    /// tenant `report_scope` is.
    pub async fn whatif(
        &self,
        report_scope: &Scope,
        applied_to: &Scope,
        control: &str,
        change: Change,
        at_ms: i64,
    ) -> Result<WhatIf, QueryError> {
        let c = self.control(control)?;
        if applied_to.tenant != report_scope.tenant {
            return Err(QueryError::BadRequest(
                "a what-if applies within the reported tenant".into(),
            ));
        }
        if report_scope.group.is_some() && applied_to.group != report_scope.group {
            return Err(QueryError::BadRequest(
                "for a group's score, the change must apply to that same group".into(),
            ));
        }
        let credit = match &change {
            Change::Fix => None,
            Change::Exception { justification } => {
                let j = posture_core::exception::Justification::parse(justification).ok_or_else(|| {
                    QueryError::BadRequest(format!(
                        "justification {justification:?}: expected third_party_control, alternate_mitigation, \
                         risk_accepted or planned_remediation"
                    ))
                })?;
                Some(j.credits())
            }
        };
        // Both scopes at one cut: the reads are repeated until they reflect the same input.
        let (before_cells, moved, cut) = {
            let mut tries = 0;
            loop {
                let (cells, cut) = self.cells_with_cut(report_scope, at_ms).await?;
                if applied_to == report_scope {
                    break (cells.clone(), cells[c as usize], cut);
                }
                let (other, other_cut) = self.cells_with_cut(applied_to, at_ms).await?;
                if other_cut == cut {
                    break (cells, other[c as usize], cut);
                }
                tries += 1;
                if tries == 10 {
                    return Err(QueryError::ClickHouse {
                        query: "rollup_counts",
                        detail: "the pipeline kept committing between the two reads of a what-if (10 tries); ask again"
                            .into(),
                    });
                }
            }
        };
        let mut after_cells = before_cells.clone();
        let k = &mut after_cells[c as usize].counts;
        let m = &moved.counts;
        // Devices of the scope that fail now, with and without exceptions.
        let (fail_eff, fail_raw, hidden) = (m[count::EFF_FAIL], m[count::RAW_FAIL], m[count::EFF_HIDDEN]);
        match credit {
            None => {
                k[count::EFF_PASS] += fail_eff;
                k[count::EFF_FAIL] -= fail_eff;
                k[count::EFF_HIDDEN] -= hidden;
                k[count::RAW_PASS] += fail_raw;
                k[count::RAW_FAIL] -= fail_raw;
            }
            Some(true) => {
                k[count::EFF_PASS] += fail_eff;
                k[count::EFF_FAIL] -= fail_eff;
                k[count::EFF_HIDDEN] -= hidden;
            }
            Some(false) => k[count::EFF_HIDDEN] += fail_eff - hidden,
        }
        let mut before = self.score_of(&before_cells, report_scope, None, at_ms);
        let mut after = self.score_of(&after_cells, report_scope, None, at_ms);
        before.cut = Some(cut.clone());
        after.cut = Some(cut);
        Ok(WhatIf {
            control: control.to_string(),
            applied_to: applied_to.clone(),
            devices_affected: if credit.is_none() { fail_raw } else { fail_eff },
            percent_gained: round2(after.total.percent - before.total.percent),
            points_gained: (after.total.points_micros - before.total.points_micros) as f64 / MICROS,
            change,
            before,
            after,
        })
    }
}

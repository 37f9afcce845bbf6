//! Small domain types shared by every stage.

use std::fmt;

/// Points in millionths of a point. All score arithmetic is integer so that
/// incremental results equal from-scratch recomputations exactly.
pub type Micros = i64;

/// One point, in [`Micros`].
pub const MICROS_PER_POINT: Micros = 1_000_000;

/// Converts micro-points to points for display.
pub fn micros_to_points(m: Micros) -> f64 {
    m as f64 / MICROS_PER_POINT as f64
}

/// `100 * points / max`, rounded to two decimals; 0 when `max` is 0.
pub fn percent(points: Micros, max: Micros) -> f64 {
    if max == 0 {
        0.0
    } else {
        (10_000.0 * points as f64 / max as f64).round() / 100.0
    }
}

/// Index of a control in the [`crate::Catalog`].
pub type ControlIdx = u32;
/// Index of an interned tenant in an [`crate::Engine`].
pub type TenantIdx = u32;
/// Index of an interned device group in an [`crate::Engine`].
pub type GroupIdx = u32;
/// Index of a device in an [`crate::Engine`].
pub type DeviceIdx = u32;

/// The benchmark category a control belongs to (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Installed software: versions, unwanted packages and services (`application`).
    Application,
    /// The operating system: kernel, updates, hardening settings (`os`).
    Os,
    /// Network exposure: firewall, IP stack, remote access (`network`).
    Network,
    /// User accounts, passwords and login policy (`accounts`).
    Accounts,
    /// Protective mechanisms: auditing, access control, integrity monitoring, secure boot
    /// (`security_controls`).
    SecurityControls,
}

impl Category {
    /// All categories, in display order.
    pub const ALL: [Category; 5] = [
        Category::Application,
        Category::Os,
        Category::Network,
        Category::Accounts,
        Category::SecurityControls,
    ];

    /// The name used in baselines, JSON and ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Application => "application",
            Category::Os => "os",
            Category::Network => "network",
            Category::Accounts => "accounts",
            Category::SecurityControls => "security_controls",
        }
    }

    /// Parses a category name as written in baselines.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a failing control is fixed: the seed product's "remediation type" filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Remediation {
    /// Fixed by changing a setting (`configuration_change`).
    ConfigurationChange,
    /// Fixed by installing or updating software (`software_update`).
    SoftwareUpdate,
}

impl Remediation {
    /// The name used in baselines and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Remediation::ConfigurationChange => "configuration_change",
            Remediation::SoftwareUpdate => "software_update",
        }
    }

    /// Parses a remediation type as written in baselines.
    pub fn parse(s: &str) -> Option<Remediation> {
        match s {
            "configuration_change" => Some(Remediation::ConfigurationChange),
            "software_update" => Some(Remediation::SoftwareUpdate),
            _ => None,
        }
    }
}

/// What a check whose result is MISSING turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMissing {
    /// `on_missing: fail`: the device-control is FAIL and counts against the score.
    Fail,
    /// `on_missing: unknown` (the default): UNKNOWN, outside every sum.
    Unknown,
    /// `on_missing: pass`: the device-control is PASS.
    Pass,
}

/// The result of evaluating a control's check against a device, before
/// exceptions: the four states an evaluation can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RawState {
    /// The check passed (or ended MISSING with `on_missing: pass`).
    Pass = 0,
    /// The check failed (or ended MISSING with `on_missing: fail`).
    Fail = 1,
    /// The check ended MISSING with `on_missing: unknown`; outside every sum.
    Unknown = 2,
    /// The control's `applies_to` does not match the device's inventory (or the
    /// device has none yet); outside every sum, and no exception changes it.
    NotApplicable = 3,
}

/// The state s(d,c) of SPEC section 3: the raw state with exceptions applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlState {
    /// Compliant: counts toward the score and the maximum.
    Pass,
    /// Misconfigured: counts toward the maximum only, and is listed in recommendations.
    Fail,
    /// Cannot be decided from the device's settings; outside every sum.
    Unknown,
    /// The control does not apply to the device; outside every sum.
    NotApplicable,
    /// An active exception covers the device-control. With a crediting justification
    /// it counts as PASS in the with-exceptions view; otherwise the score is unchanged
    /// and the device is hidden from recommendations.
    Excepted,
}

impl ControlState {
    /// The upper-case name used on the wire (Avro enum symbol, ClickHouse).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Pass => "PASS",
            ControlState::Fail => "FAIL",
            ControlState::Unknown => "UNKNOWN",
            ControlState::NotApplicable => "NOT_APPLICABLE",
            ControlState::Excepted => "EXCEPTED",
        }
    }
}

impl fmt::Display for ControlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RawState {
    /// The upper-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RawState::Pass => "PASS",
            RawState::Fail => "FAIL",
            RawState::Unknown => "UNKNOWN",
            RawState::NotApplicable => "NOT_APPLICABLE",
        }
    }
}

/// Where an input record came from, so every output can name its lineage.
/// The core never fills it; ingest sets the Kafka partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourcePos {
    /// Kafka partition, or -1 when the event did not come from Kafka.
    pub partition: i32,
    /// Kafka offset, or the line number of a JSON-lines file.
    pub offset: i64,
}

impl SourcePos {
    /// A position in a JSON-lines file (partition -1, offset = 1-based line).
    pub fn line(line: u64) -> SourcePos {
        SourcePos {
            partition: -1,
            offset: line as i64,
        }
    }
}

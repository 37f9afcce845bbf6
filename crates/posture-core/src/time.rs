//! Event-time parsing and formatting (milliseconds since the Unix epoch).

use ::time::format_description::well_known::Rfc3339;
use ::time::OffsetDateTime;

/// Parses an RFC 3339 timestamp (`2026-11-22T10:00:00Z`, offsets allowed) or a
/// plain integer of milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time or integer milliseconds: {s:?} ({e})"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Formats milliseconds since the epoch as RFC 3339 UTC, with milliseconds
/// only when they are not zero (`2026-11-22T10:00:00Z`).
pub fn format_time(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return format!("{ms}ms");
    };
    let (y, mo, d) = (t.year(), t.month() as u8, t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    let milli = t.millisecond();
    if milli == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = parse_time("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(ms, 1_795_341_600_000);
        assert_eq!(format_time(ms), "2026-11-22T10:00:00Z");
        assert_eq!(parse_time("2026-11-22T12:00:00.250+02:00").unwrap(), ms + 250);
        assert_eq!(format_time(ms + 250), "2026-11-22T10:00:00.250Z");
        assert_eq!(parse_time("1795341600000").unwrap(), ms);
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}

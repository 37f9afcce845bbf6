//! Watching the consumer group's assignment: an instance that holds no partition of the events
//! topic does nothing, and says so.
//!
//! After a start, or after its partitions were revoked, an instance normally gets an assignment
//! within one rebalance: seconds, plus the session timeout of a member that died without leaving.
//! When none comes within a bound, something is wrong, and the usual causes are:
//!
//! - the group still lists a member that died without leaving, and the broker does not evict it.
//!   Tansu 0.6 checks session timeouts only when another request of the group comes in; if the
//!   check happens on a follower's SyncGroup, the group settles with an *empty* assignment for
//!   the new member, which then heartbeats happily forever (see the README, "Restart after a
//!   crash");
//! - the group has more members than the topic has partitions (an idle instance is normal
//!   for a hot standby, but a whole idle fleet is a deployment mistake).
//!
//! [`AssignmentWatch`] is the decision, kept free of I/O so it can be tested alone: it is fed
//! the number of assigned partitions on every tick of the ingest loop, and answers when the
//! loop must warn, fail `/readyz` and leave and re-join the group. Leaving and re-joining
//! clears the stuck state on Tansu (the group empties, the next JoinGroup elects this instance
//! leader of a group that has all the partitions to give); on Kafka it costs one rebalance of
//! the group, so it is retried with a doubling interval (up to [`MAX_REJOIN_INTERVAL`]).

use std::time::{Duration, Instant};

/// The longest interval between two re-joins of an instance that keeps getting no partition.
pub const MAX_REJOIN_INTERVAL: Duration = Duration::from_secs(600);

/// What the ingest loop should do after [`AssignmentWatch::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Partitions are assigned. `after_stall` is set on the first observation after a
    /// [`Verdict::Stalled`]: how long the instance was without (the loop says it recovered).
    Assigned {
        /// How long the instance held no partition, when that was long enough to report.
        after_stall: Option<Duration>,
    },
    /// No partition yet, within the bound (or the watch is off): nothing to do but wait.
    Waiting {
        /// Since when (as a duration) no partition has been held.
        unassigned_for: Duration,
    },
    /// No partition for longer than the bound: warn, fail readiness, and re-join the group if
    /// `rejoin`. Given once per attempt; attempts come at doubling intervals.
    Stalled {
        /// How long no partition has been held.
        unassigned_for: Duration,
        /// 1 for the first report of this stall, then 2, 3, ...
        attempt: u32,
        /// Whether the loop should leave and re-join the group now.
        rejoin: bool,
        /// When the next attempt comes if the stall goes on.
        next_in: Duration,
    },
}

/// The assignment watchdog's state (see the module documentation).
#[derive(Clone, Debug)]
pub struct AssignmentWatch {
    timeout: Duration,
    rejoin: bool,
    /// Since when no partition is held; `None` while some are.
    unassigned_since: Option<Instant>,
    /// When the next [`Verdict::Stalled`] is due.
    next_attempt: Option<Instant>,
    attempts: u32,
}

impl AssignmentWatch {
    /// A watch started at `now` (a start counts as "no partition yet"). `timeout` is the bound
    /// (zero: never report); `rejoin` whether a stall makes the instance re-join its group.
    pub fn new(now: Instant, timeout: Duration, rejoin: bool) -> AssignmentWatch {
        AssignmentWatch {
            // A day at most: larger values would only overflow the instants computed from it.
            timeout: timeout.min(Duration::from_secs(86_400)),
            rejoin,
            unassigned_since: Some(now),
            next_attempt: None,
            attempts: 0,
        }
    }

    /// Notes that `assigned` partitions are held at `now` and says what to do.
    pub fn observe(&mut self, now: Instant, assigned: usize) -> Verdict {
        if assigned > 0 {
            let after_stall = match self.unassigned_since.take() {
                Some(since) if self.attempts > 0 => Some(now.saturating_duration_since(since)),
                _ => None,
            };
            self.next_attempt = None;
            self.attempts = 0;
            return Verdict::Assigned { after_stall };
        }
        let since = *self.unassigned_since.get_or_insert(now);
        let unassigned_for = now.saturating_duration_since(since);
        if self.timeout.is_zero() {
            return Verdict::Waiting { unassigned_for };
        }
        let due = *self.next_attempt.get_or_insert(since + self.timeout);
        if now < due {
            return Verdict::Waiting { unassigned_for };
        }
        self.attempts += 1;
        let next_in = self
            .timeout
            .saturating_mul(1 << self.attempts.min(16))
            .min(MAX_REJOIN_INTERVAL.max(self.timeout));
        self.next_attempt = Some(now + next_in);
        Verdict::Stalled {
            unassigned_for,
            attempt: self.attempts,
            rejoin: self.rejoin,
            next_in,
        }
    }

    /// How long no partition has been held at `now` (zero while some are).
    pub fn unassigned_for(&self, now: Instant) -> Duration {
        self.unassigned_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_assignment_within_the_bound_is_quiet() {
        let t0 = Instant::now();
        let mut w = AssignmentWatch::new(t0, 30 * S, true);
        assert_eq!(w.observe(t0 + 5 * S, 0), Verdict::Waiting { unassigned_for: 5 * S });
        assert_eq!(w.observe(t0 + 29 * S, 0), Verdict::Waiting { unassigned_for: 29 * S });
        assert_eq!(w.observe(t0 + 29 * S, 6), Verdict::Assigned { after_stall: None });
        assert_eq!(w.unassigned_for(t0 + 40 * S), Duration::ZERO);
    }

    #[test]
    fn a_stall_is_reported_at_the_bound_then_at_doubling_intervals() {
        let t0 = Instant::now();
        let mut w = AssignmentWatch::new(t0, 30 * S, true);
        let stalled = |for_s: u32, attempt: u32, next_s: u32| Verdict::Stalled {
            unassigned_for: for_s * S,
            attempt,
            rejoin: true,
            next_in: next_s * S,
        };
        assert_eq!(w.observe(t0 + 30 * S, 0), stalled(30, 1, 60));
        assert_eq!(w.observe(t0 + 31 * S, 0), Verdict::Waiting { unassigned_for: 31 * S });
        assert_eq!(w.observe(t0 + 90 * S, 0), stalled(90, 2, 120));
        assert_eq!(w.observe(t0 + 210 * S, 0), stalled(210, 3, 240));
        assert_eq!(w.observe(t0 + 450 * S, 0), stalled(450, 4, 480));
        // Capped at MAX_REJOIN_INTERVAL.
        assert_eq!(w.observe(t0 + 930 * S, 0), stalled(930, 5, 600));
        assert_eq!(w.observe(t0 + 1530 * S, 0), stalled(1530, 6, 600));
        assert_eq!(
            w.observe(t0 + 1531 * S, 2),
            Verdict::Assigned {
                after_stall: Some(1531 * S)
            }
        );
    }

    #[test]
    fn a_revocation_starts_a_new_wait() {
        let t0 = Instant::now();
        let mut w = AssignmentWatch::new(t0, 10 * S, false);
        assert_eq!(w.observe(t0 + S, 3), Verdict::Assigned { after_stall: None });
        // Revoked at 100 s: the bound counts from there, not from the start.
        assert_eq!(
            w.observe(t0 + 100 * S, 0),
            Verdict::Waiting {
                unassigned_for: Duration::ZERO
            }
        );
        assert_eq!(w.observe(t0 + 109 * S, 0), Verdict::Waiting { unassigned_for: 9 * S });
        assert_eq!(
            w.observe(t0 + 110 * S, 0),
            Verdict::Stalled {
                unassigned_for: 10 * S,
                attempt: 1,
                rejoin: false,
                next_in: 20 * S
            }
        );
        assert_eq!(w.unassigned_for(t0 + 112 * S), 12 * S);
    }

    #[test]
    fn a_zero_bound_never_reports() {
        let t0 = Instant::now();
        let mut w = AssignmentWatch::new(t0, Duration::ZERO, true);
        assert_eq!(
            w.observe(t0 + 3600 * S, 0),
            Verdict::Waiting {
                unassigned_for: 3600 * S
            }
        );
    }
}

//! PutLogEvents batching within CloudWatch Logs' limits (DESIGN §7), as pure functions.
//!
//! A PutLogEvents call takes at most [`MAX_LOG_EVENTS_PER_BATCH`] events and
//! [`MAX_LOG_BATCH_BYTES`] bytes, where each event counts its UTF-8 message plus
//! [`LOG_EVENT_OVERHEAD_BYTES`]; its events must be in timestamp order and span at most 24 h;
//! CloudWatch rejects events older than 14 days or more than 2 h in the future (it answers
//! 200 and lists them in `rejectedLogEventsInfo`, which is how data goes missing silently).
//!
//! Nothing is dropped here. An event outside the accepted window is **re-timed**: one too old
//! is stamped at the oldest accepted instant (plus a margin so a retry an hour later is still
//! accepted), one too far ahead is stamped now. The sink keeps the original time in the JSON
//! message (`occurred_at`, and `retimed: {reason, original_timestamp_ms}`), so a reader can
//! always tell when the event really happened.

/// PutLogEvents: most events in one call.
pub const MAX_LOG_EVENTS_PER_BATCH: usize = 10_000;
/// PutLogEvents: most bytes in one call, counting [`LOG_EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_LOG_BATCH_BYTES: usize = 1_048_576;
/// What CloudWatch Logs adds to each event's message size when it counts a batch.
pub const LOG_EVENT_OVERHEAD_BYTES: usize = 26;
/// Longest message of one event, overhead included in CloudWatch's count (256 KiB).
pub const MAX_LOG_EVENT_BYTES: usize = 262_144 - LOG_EVENT_OVERHEAD_BYTES;
/// Widest span of timestamps in one call.
pub const MAX_LOG_BATCH_SPAN_MS: i64 = 24 * 3_600_000;
/// Oldest timestamp CloudWatch Logs accepts, relative to now.
pub const MAX_LOG_EVENT_AGE_MS: i64 = 14 * 24 * 3_600_000;
/// Furthest-ahead timestamp CloudWatch Logs accepts, relative to now.
pub const MAX_LOG_EVENT_AHEAD_MS: i64 = 2 * 3_600_000;
/// How far inside the age limit a re-timed old event lands, so the same batch retried later
/// (the runner backs off, an emulator restarts) is still inside the window.
pub const RETIME_MARGIN_MS: i64 = 3_600_000;

/// Why an event's CloudWatch timestamp is not the time it occurred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetimeReason {
    /// Older than 14 days: stamped at the oldest accepted instant (plus a margin).
    OlderThan14Days,
    /// More than 2 h ahead of this clock: stamped now.
    MoreThan2HoursAhead,
}

impl RetimeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetimeReason::OlderThan14Days => "older_than_14_days",
            RetimeReason::MoreThan2HoursAhead => "more_than_2_hours_ahead",
        }
    }
}

/// The timestamp CloudWatch will accept for an event that occurred at `occurred_ms`, given the
/// clock `now_ms`, and why it differs when it does. Never drops: see the module docs.
pub fn fit_log_timestamp(occurred_ms: i64, now_ms: i64) -> (i64, Option<RetimeReason>) {
    let oldest = now_ms - MAX_LOG_EVENT_AGE_MS;
    if occurred_ms < oldest {
        (
            oldest + RETIME_MARGIN_MS,
            Some(RetimeReason::OlderThan14Days),
        )
    } else if occurred_ms > now_ms + MAX_LOG_EVENT_AHEAD_MS {
        (now_ms, Some(RetimeReason::MoreThan2HoursAhead))
    } else {
        (occurred_ms, None)
    }
}

/// One log event ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp_ms: i64,
    pub message: String,
}

impl LogRecord {
    /// Bytes this event counts for in a batch.
    pub fn batch_bytes(&self) -> usize {
        self.message.len() + LOG_EVENT_OVERHEAD_BYTES
    }
}

/// Splits `records` into PutLogEvents calls: sorted by timestamp (stable, so events with the
/// same timestamp keep their order), each call within the count, byte and 24 h span limits.
/// Every record lands in exactly one batch. Callers keep each message within
/// [`MAX_LOG_EVENT_BYTES`] (see [`truncate_utf8`]); a bigger one still gets a batch of its own.
pub fn plan_log_batches(records: Vec<LogRecord>) -> Vec<Vec<LogRecord>> {
    plan_keyed_log_batches(records, |r| r)
}

/// [`plan_log_batches`] over items that carry a record (and whatever the caller needs back
/// per record, such as the key it dedups on).
pub fn plan_keyed_log_batches<T>(
    mut items: Vec<T>,
    record: impl Fn(&T) -> &LogRecord,
) -> Vec<Vec<T>> {
    items.sort_by_key(|item| record(item).timestamp_ms);
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut first_ts = 0i64;
    let mut bytes = 0usize;
    for item in items {
        let r = record(&item);
        let size = r.batch_bytes();
        let ts = r.timestamp_ms;
        let full = current.len() >= MAX_LOG_EVENTS_PER_BATCH
            || bytes + size > MAX_LOG_BATCH_BYTES
            || (!current.is_empty() && ts - first_ts > MAX_LOG_BATCH_SPAN_MS);
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        if current.is_empty() {
            first_ts = ts;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The longest prefix of `s` of at most `max_bytes` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn rec(ts: i64, len: usize) -> LogRecord {
        LogRecord {
            timestamp_ms: ts,
            message: "x".repeat(len),
        }
    }

    fn count(batches: &[Vec<LogRecord>]) -> usize {
        batches.iter().map(Vec::len).sum()
    }

    #[test]
    fn ten_thousand_events_fit_one_call_and_the_next_one_opens_a_second() {
        let batches = plan_log_batches(
            (0..MAX_LOG_EVENTS_PER_BATCH)
                .map(|i| rec(NOW + i as i64, 1))
                .collect(),
        );
        assert_eq!(batches.len(), 1);
        let batches = plan_log_batches(
            (0..=MAX_LOG_EVENTS_PER_BATCH)
                .map(|i| rec(NOW + i as i64, 1))
                .collect(),
        );
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].len(), MAX_LOG_EVENTS_PER_BATCH);
        assert_eq!(batches[1].len(), 1);
    }

    #[test]
    fn bytes_count_the_26_byte_overhead_per_event_up_to_exactly_1_mib() {
        // Four events whose message plus overhead is exactly a quarter of the limit fill one call.
        let quarter = MAX_LOG_BATCH_BYTES / 4 - LOG_EVENT_OVERHEAD_BYTES;
        let batches = plan_log_batches((0..4).map(|i| rec(NOW + i, quarter)).collect());
        assert_eq!(batches.len(), 1);
        let total: usize = batches[0].iter().map(LogRecord::batch_bytes).sum();
        assert_eq!(total, MAX_LOG_BATCH_BYTES);
        // One byte more in the last message would exceed it: that event moves to a new call.
        let mut records: Vec<_> = (0..4).map(|i| rec(NOW + i, quarter)).collect();
        records[3].message.push('x');
        let batches = plan_log_batches(records);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 1]);
    }

    #[test]
    fn overhead_alone_splits_many_tiny_events() {
        // 40,330 one-byte events are 27 bytes each; 1 MiB holds 38,836 of them, but the count
        // limit cuts first at 10,000.
        let batches = plan_log_batches((0..40_330).map(|i| rec(NOW + i, 1)).collect());
        assert!(batches.iter().all(|b| b.len() <= MAX_LOG_EVENTS_PER_BATCH));
        assert_eq!(count(&batches), 40_330);
        // With 100-byte messages (126 counted), 8,322 fit in 1 MiB; the count limit does not bind.
        let per_call = MAX_LOG_BATCH_BYTES / (100 + LOG_EVENT_OVERHEAD_BYTES);
        let batches = plan_log_batches(
            (0..per_call + 1)
                .map(|i| rec(NOW + i as i64, 100))
                .collect(),
        );
        assert_eq!(batches[0].len(), per_call);
        assert_eq!(batches[1].len(), 1);
    }

    #[test]
    fn events_are_sorted_by_timestamp_keeping_ties_in_order() {
        let records = vec![
            LogRecord {
                timestamp_ms: 30,
                message: "c".into(),
            },
            LogRecord {
                timestamp_ms: 10,
                message: "a".into(),
            },
            LogRecord {
                timestamp_ms: 30,
                message: "d".into(),
            },
            LogRecord {
                timestamp_ms: 20,
                message: "b".into(),
            },
        ];
        let batches = plan_log_batches(records);
        let order: Vec<&str> = batches[0].iter().map(|r| r.message.as_str()).collect();
        assert_eq!(order, vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn a_call_spans_at_most_24_hours_inclusive() {
        let day = MAX_LOG_BATCH_SPAN_MS;
        let batches = plan_log_batches(vec![rec(NOW, 1), rec(NOW + day, 1)]);
        assert_eq!(batches.len(), 1, "exactly 24 h apart is allowed");
        let batches = plan_log_batches(vec![rec(NOW, 1), rec(NOW + day, 1), rec(NOW + day + 1, 1)]);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].len(), 1);
        for b in &batches {
            assert!(b.last().unwrap().timestamp_ms - b[0].timestamp_ms <= day);
        }
    }

    #[test]
    fn nothing_is_dropped_and_no_input_gives_no_call() {
        assert!(plan_log_batches(Vec::new()).is_empty());
        let records: Vec<_> = (0..25_000)
            .map(|i| rec(NOW - (i % 7) * 3_600_000 * 5, 60))
            .collect();
        let batches = plan_log_batches(records);
        assert_eq!(count(&batches), 25_000);
    }

    #[test]
    fn an_event_exactly_14_days_old_keeps_its_time_one_ms_older_is_retimed_inside_the_window() {
        let oldest = NOW - MAX_LOG_EVENT_AGE_MS;
        assert_eq!(fit_log_timestamp(oldest, NOW), (oldest, None));
        let (ts, why) = fit_log_timestamp(oldest - 1, NOW);
        assert_eq!(why, Some(RetimeReason::OlderThan14Days));
        assert_eq!(ts, oldest + RETIME_MARGIN_MS);
        // Still accepted when the same batch is retried 59 minutes later.
        assert_eq!(fit_log_timestamp(ts, NOW + 59 * 60_000).1, None);
        let (ts, why) = fit_log_timestamp(0, NOW);
        assert_eq!(
            (ts, why),
            (
                oldest + RETIME_MARGIN_MS,
                Some(RetimeReason::OlderThan14Days)
            )
        );
    }

    #[test]
    fn an_event_exactly_2_hours_ahead_keeps_its_time_one_ms_more_is_stamped_now() {
        let newest = NOW + MAX_LOG_EVENT_AHEAD_MS;
        assert_eq!(fit_log_timestamp(newest, NOW), (newest, None));
        assert_eq!(
            fit_log_timestamp(newest + 1, NOW),
            (NOW, Some(RetimeReason::MoreThan2HoursAhead))
        );
        assert_eq!(fit_log_timestamp(NOW, NOW), (NOW, None));
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}

//! [`Ledger`]: one tenant's limits as pure arithmetic on an explicit clock — the in-memory
//! store runs it, and `store/limits.lua` is its line-by-line twin inside Redis. Both are held
//! to the same conformance tests.
//!
//! - `rpm` and `tpm` are token buckets that refill continuously (capacity = the limit, full
//!   after one minute of silence), so `Retry-After` is exact: when enough will have refilled.
//! - Tokens are **reserved** at admission (prompt estimate + completion cap) and **settled** to
//!   the actual usage: the difference is refunded, or charged as debt (the bucket may go below
//!   zero, and later requests wait for it).
//! - `tokens_per_day` / `tokens_per_month` are calendar windows (UTC); a reservation counts
//!   against them at once, so concurrent streams cannot overrun a budget together.
//! - `max_concurrent` counts unsettled reservations. One left by a gateway that died expires
//!   after its TTL and stays charged what it reserved.
//! - Settlement is idempotent by request id: a second settle of the same id changes nothing.

use std::collections::HashMap;

/// A tenant's limits; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Requests,
    Tokens,
    Concurrency,
    Day,
    Month,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
            Self::Concurrency => "max_concurrent",
            Self::Day => "tokens_per_day",
            Self::Month => "tokens_per_month",
        }
    }

    /// Budgets are spent until their window turns; the others refill.
    pub fn is_budget(self) -> bool {
        matches!(self, Self::Day | Self::Month)
    }

    /// The wire code of a Lua refusal.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::Requests,
            2 => Self::Tokens,
            3 => Self::Concurrency,
            4 => Self::Day,
            5 => Self::Month,
            _ => return None,
        })
    }
}

/// What remains, as of a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub requests: Option<u64>,
    /// May be negative: prompt-side debt.
    pub tokens: Option<i64>,
    pub concurrent: Option<u64>,
    pub today: Option<u64>,
    pub this_month: Option<u64>,
    /// Until the request bucket is full again.
    pub requests_reset_ms: u64,
    /// Until the token bucket is full again.
    pub tokens_reset_ms: u64,
    pub day_reset_ms: u64,
    pub month_reset_ms: u64,
}

/// A reservation's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Granted(Remaining),
    /// `retry_after_ms` is when the refused limit will allow this request; `None` if it never
    /// can (the request alone is larger than the limit).
    Refused {
        limit: Limit,
        retry_after_ms: Option<u64>,
        remaining: Remaining,
    },
}

const MINUTE_MS: f64 = 60_000.0;
pub const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at_ms: u64,
}

impl Bucket {
    fn refilled(self, capacity: u64, now_ms: u64) -> f64 {
        let rate = capacity as f64 / MINUTE_MS;
        (self.level + now_ms.saturating_sub(self.at_ms) as f64 * rate).min(capacity as f64)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    index: i64,
    used: u64,
}

/// Tokens a request holds against its tenant's budgets until it settles or the hold expires.
#[derive(Debug, Clone, Copy)]
struct TokenHold {
    tokens: u64,
    expires_ms: u64,
    day: i64,
    month: i64,
}

/// One tenant's counters.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    day: Window,
    month: Window,
    held: HashMap<String, TokenHold>,
    /// Ids cancelled before their reservation arrived, until when they are remembered.
    cancelled: HashMap<String, u64>,
}

impl Ledger {
    /// Reserves one request and `tokens` for `id`, or says which limit refuses and until when.
    pub fn reserve(
        &mut self,
        id: &str,
        tokens: u64,
        limits: &Limits,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Decision {
        self.expire(now_ms);
        self.turn_windows(now_ms);
        if self.held.contains_key(id) || self.cancelled.contains_key(id) {
            // A retry of a granted reservation, or one cancelled already: nothing more held.
            return Decision::Granted(self.remaining(limits, now_ms));
        }
        let requests = limits.rpm.map(|cap| self.bucket_level(false, cap, now_ms));
        let level = limits.tpm.map(|cap| self.bucket_level(true, cap, now_ms));
        let refuse = |limit, retry_after_ms, this: &Self| Decision::Refused {
            limit,
            retry_after_ms,
            remaining: this.remaining(limits, now_ms),
        };
        if let Some(max) = limits.max_concurrent
            && self.held.len() as u64 >= max
        {
            // The soonest a slot frees for sure is when the oldest reservation expires; most
            // end far sooner, so clients are told to come back in a second.
            return refuse(Limit::Concurrency, Some(1000), self);
        }
        if let (Some(cap), Some(level)) = (limits.rpm, requests)
            && level < 1.0
        {
            return refuse(Limit::Requests, Some(wait_ms(1.0 - level, cap)), self);
        }
        if let (Some(cap), Some(level)) = (limits.tpm, level)
            && level < tokens as f64
        {
            let retry = (tokens <= cap).then(|| wait_ms(tokens as f64 - level, cap));
            return refuse(Limit::Tokens, retry, self);
        }
        if let Some(budget) = limits.tokens_per_day
            && self.day.used + tokens > budget
        {
            let held: u64 = self
                .held
                .values()
                .filter(|h| h.day == self.day.index)
                .map(|h| h.tokens)
                .sum();
            let retry = budget_retry(
                tokens,
                budget,
                self.day.used,
                held,
                next_day_ms(now_ms) - now_ms,
            );
            return refuse(Limit::Day, retry, self);
        }
        if let Some(budget) = limits.tokens_per_month
            && self.month.used + tokens > budget
        {
            let held: u64 = self
                .held
                .values()
                .filter(|h| h.month == self.month.index)
                .map(|h| h.tokens)
                .sum();
            let retry = budget_retry(
                tokens,
                budget,
                self.month.used,
                held,
                next_month_ms(now_ms) - now_ms,
            );
            return refuse(Limit::Month, retry, self);
        }
        if let Some(level) = requests {
            self.requests = Some(Bucket {
                level: level - 1.0,
                at_ms: now_ms,
            });
        }
        if let Some(level) = level {
            self.tokens = Some(Bucket {
                level: level - tokens as f64,
                at_ms: now_ms,
            });
        }
        self.day.used += tokens;
        self.month.used += tokens;
        self.held.insert(
            id.to_owned(),
            TokenHold {
                tokens,
                expires_ms: now_ms + ttl_ms,
                day: self.day.index,
                month: self.month.index,
            },
        );
        Decision::Granted(self.remaining(limits, now_ms))
    }

    /// Settles `id` to `used` tokens: refunds the rest of its reservation or charges the excess.
    /// Unknown (already settled or expired) ids change nothing.
    pub fn settle(&mut self, id: &str, used: u64, limits: &Limits, now_ms: u64) {
        self.expire(now_ms);
        self.turn_windows(now_ms);
        let Some(held) = self.held.remove(id) else {
            return;
        };
        let refund = held.tokens as i64 - used as i64;
        if let Some(cap) = limits.tpm {
            let level = self.bucket_level(true, cap, now_ms);
            self.tokens = Some(Bucket {
                level: (level + refund as f64).min(cap as f64),
                at_ms: now_ms,
            });
        }
        if held.day == self.day.index {
            self.day.used = (self.day.used as i64 - refund).max(0) as u64;
        }
        if held.month == self.month.index {
            self.month.used = (self.month.used as i64 - refund).max(0) as u64;
        }
    }

    /// Cancels `id`, whose reservation may or may not have been made: a held one is refunded
    /// whole; an unknown one is remembered for `ttl_ms`, so its reservation, if it comes
    /// later, reserves nothing.
    pub fn cancel(&mut self, id: &str, limits: &Limits, now_ms: u64, ttl_ms: u64) {
        if self.held.contains_key(id) {
            self.settle(id, 0, limits, now_ms);
        } else {
            self.cancelled.insert(id.to_owned(), now_ms + ttl_ms);
        }
    }

    /// What remains now, without changing anything.
    pub fn peek(&mut self, limits: &Limits, now_ms: u64) -> Remaining {
        self.expire(now_ms);
        self.turn_windows(now_ms);
        self.remaining(limits, now_ms)
    }

    /// Unsettled reservations now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn bucket_level(&self, tokens: bool, capacity: u64, now_ms: u64) -> f64 {
        let bucket = if tokens { self.tokens } else { self.requests };
        bucket.map_or(capacity as f64, |b| b.refilled(capacity, now_ms))
    }

    fn expire(&mut self, now_ms: u64) {
        self.held.retain(|_, held| held.expires_ms > now_ms);
        self.cancelled.retain(|_, until| *until > now_ms);
    }

    fn turn_windows(&mut self, now_ms: u64) {
        let day = day_index(now_ms);
        if self.day.index != day {
            self.day = Window {
                index: day,
                used: 0,
            };
        }
        let month = month_index(now_ms);
        if self.month.index != month {
            self.month = Window {
                index: month,
                used: 0,
            };
        }
    }

    fn remaining(&self, limits: &Limits, now_ms: u64) -> Remaining {
        let requests = limits
            .rpm
            .map(|cap| (cap, self.bucket_level(false, cap, now_ms)));
        let tokens = limits
            .tpm
            .map(|cap| (cap, self.bucket_level(true, cap, now_ms)));
        Remaining {
            requests: requests.map(|(_, level)| level.max(0.0).floor() as u64),
            tokens: tokens.map(|(_, level)| level.floor() as i64),
            concurrent: limits
                .max_concurrent
                .map(|max| max.saturating_sub(self.held.len() as u64)),
            today: limits
                .tokens_per_day
                .map(|budget| budget.saturating_sub(self.day.used)),
            this_month: limits
                .tokens_per_month
                .map(|budget| budget.saturating_sub(self.month.used)),
            requests_reset_ms: requests.map_or(0, |(cap, level)| wait_ms(cap as f64 - level, cap)),
            tokens_reset_ms: tokens.map_or(0, |(cap, level)| wait_ms(cap as f64 - level, cap)),
            day_reset_ms: next_day_ms(now_ms) - now_ms,
            month_reset_ms: next_month_ms(now_ms) - now_ms,
        }
    }
}

/// When a budget refusal may pass: never if the request alone is larger than the budget; soon
/// ([`HELD_RETRY_MS`]) if the budget is only held by reservations in flight, which settle to
/// what they use; else when the window turns.
fn budget_retry(
    tokens: u64,
    budget: u64,
    used: u64,
    held: u64,
    window_left_ms: u64,
) -> Option<u64> {
    if tokens > budget {
        None
    } else if used.saturating_sub(held) + tokens <= budget {
        Some(HELD_RETRY_MS)
    } else {
        Some(window_left_ms)
    }
}

/// The retry hint while a budget is held by requests in flight rather than spent.
pub const HELD_RETRY_MS: u64 = 1000;

/// Milliseconds until a bucket of `capacity` per minute refills `missing`, rounded up.
fn wait_ms(missing: f64, capacity: u64) -> u64 {
    if missing <= 0.0 {
        return 0;
    }
    (missing * MINUTE_MS / capacity as f64).ceil() as u64
}

pub fn day_index(now_ms: u64) -> i64 {
    (now_ms / DAY_MS) as i64
}

fn next_day_ms(now_ms: u64) -> u64 {
    (now_ms / DAY_MS + 1) * DAY_MS
}

/// `year * 12 + month - 1` of the UTC date of `now_ms`.
pub fn month_index(now_ms: u64) -> i64 {
    let (year, month, _) = civil_from_days(day_index(now_ms));
    year * 12 + month - 1
}

fn next_month_ms(now_ms: u64) -> u64 {
    let (year, month, _) = civil_from_days(day_index(now_ms));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(year, month, 1) as u64 * DAY_MS
}

/// Howard Hinnant's `civil_from_days`: (year, month 1–12, day 1–31) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000; // 2026-11-18, mid-month

    fn limits() -> Limits {
        Limits {
            rpm: Some(2),
            tpm: Some(1000),
            max_concurrent: Some(3),
            tokens_per_day: Some(5000),
            tokens_per_month: None,
        }
    }

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 28), 20_785);
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let nov_28 = 20_785 * DAY_MS + 3_600_000;
        assert_eq!(
            next_month_ms(nov_28),
            days_from_civil(2026, 12, 1) as u64 * DAY_MS
        );
        let dec_31 = days_from_civil(2026, 12, 31) as u64 * DAY_MS;
        assert_eq!(
            next_month_ms(dec_31),
            days_from_civil(2027, 1, 1) as u64 * DAY_MS
        );
        assert_eq!(month_index(nov_28), 2026 * 12 + 10);
    }

    #[test]
    fn requests_refill_continuously_and_retry_after_is_exact() {
        let mut ledger = Ledger::default();
        let l = limits();
        assert!(matches!(
            ledger.reserve("a", 1, &l, T0, 60_000),
            Decision::Granted(_)
        ));
        assert!(matches!(
            ledger.reserve("b", 1, &l, T0, 60_000),
            Decision::Granted(_)
        ));
        let Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } = ledger.reserve("c", 1, &l, T0, 60_000)
        else {
            panic!("third request in the same instant must be refused")
        };
        assert_eq!((limit, retry_after_ms), (Limit::Requests, Some(30_000)));
        assert!(matches!(
            ledger.reserve("c", 1, &l, T0 + 30_000, 60_000),
            Decision::Granted(_)
        ));
    }

    #[test]
    fn tokens_are_reserved_then_refunded_or_charged_as_debt() {
        let mut ledger = Ledger::default();
        let l = Limits {
            rpm: None,
            ..limits()
        };
        let Decision::Granted(after) = ledger.reserve("a", 800, &l, T0, 60_000) else {
            panic!()
        };
        assert_eq!(after.tokens, Some(200));
        assert_eq!(after.today, Some(4200));
        let Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } = ledger.reserve("b", 300, &l, T0, 60_000)
        else {
            panic!()
        };
        assert_eq!((limit, retry_after_ms), (Limit::Tokens, Some(6000)));
        ledger.settle("a", 100, &l, T0);
        let now = ledger.peek(&l, T0);
        assert_eq!(now.tokens, Some(900));
        assert_eq!(now.today, Some(4900));
        assert_eq!(now.concurrent, Some(3));
        // Settling twice changes nothing.
        ledger.settle("a", 100, &l, T0);
        assert_eq!(ledger.peek(&l, T0).tokens, Some(900));
        // Used more than reserved: debt.
        assert!(matches!(
            ledger.reserve("c", 100, &l, T0, 60_000),
            Decision::Granted(_)
        ));
        ledger.settle("c", 1500, &l, T0);
        assert_eq!(ledger.peek(&l, T0).tokens, Some(-600));
        let Decision::Refused { retry_after_ms, .. } = ledger.reserve("d", 1, &l, T0, 60_000)
        else {
            panic!("debt must be waited for")
        };
        assert_eq!(retry_after_ms, Some(36_060));
    }

    #[test]
    fn a_request_larger_than_a_limit_can_never_pass() {
        let mut ledger = Ledger::default();
        let Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } = ledger.reserve("a", 1001, &limits(), T0, 60_000)
        else {
            panic!()
        };
        assert_eq!((limit, retry_after_ms), (Limit::Tokens, None));
    }

    #[test]
    fn concurrency_counts_unsettled_reservations_until_they_expire() {
        let mut ledger = Ledger::default();
        let l = Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        };
        assert!(matches!(
            ledger.reserve("a", 0, &l, T0, 5000),
            Decision::Granted(_)
        ));
        assert!(matches!(
            ledger.reserve("b", 0, &l, T0, 5000),
            Decision::Refused {
                limit: Limit::Concurrency,
                ..
            }
        ));
        assert!(matches!(
            ledger.reserve("b", 0, &l, T0 + 5000, 5000),
            Decision::Granted(_)
        ));
        assert_eq!(ledger.held(), 1);
    }

    #[test]
    fn budgets_hold_until_the_window_turns() {
        let mut ledger = Ledger::default();
        let l = Limits {
            tokens_per_day: Some(100),
            ..Limits::default()
        };
        assert!(matches!(
            ledger.reserve("a", 100, &l, T0, 5000),
            Decision::Granted(_)
        ));
        ledger.settle("a", 100, &l, T0);
        let Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } = ledger.reserve("b", 1, &l, T0, 5000)
        else {
            panic!()
        };
        assert_eq!(limit, Limit::Day);
        assert_eq!(retry_after_ms, Some(next_day_ms(T0) - T0));
        assert!(matches!(
            ledger.reserve("b", 1, &l, next_day_ms(T0), 5000),
            Decision::Granted(_)
        ));
    }

    #[test]
    fn a_budget_held_by_requests_in_flight_is_retried_soon_not_at_midnight() {
        let mut ledger = Ledger::default();
        let l = Limits {
            tokens_per_day: Some(100),
            ..Limits::default()
        };
        assert!(matches!(
            ledger.reserve("a", 60, &l, T0, 60_000),
            Decision::Granted(_)
        ));
        let Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } = ledger.reserve("b", 60, &l, T0, 60_000)
        else {
            panic!()
        };
        assert_eq!((limit, retry_after_ms), (Limit::Day, Some(HELD_RETRY_MS)));
        ledger.settle("a", 10, &l, T0);
        assert!(matches!(
            ledger.reserve("b", 60, &l, T0, 60_000),
            Decision::Granted(_)
        ));
    }
}

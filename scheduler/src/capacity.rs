//! [`Capacity`]: how many requests one endpoint takes at once, and whether it takes any more
//! now. Priorities, fairness and objectives act in our queue only: every request sent beyond
//! what the engine runs waits inside the engine in arrival order, where none of them reaches.
//!
//! - **Configured** (`slots = N`): N at most, always; an engine that reports running fewer
//!   lowers it (it is a ceiling, never raised).
//! - **From the engine** (`/props` `total_slots`, `/metrics`, see
//!   [`crate::backend::engine_load`]): its slot count where it says one; while it reports
//!   work waiting inside it or its KV cache nearly full it is **saturated** — it takes nothing
//!   more until it drains — and the limit drops to what it runs; once clear, the limit grows
//!   back by one per report up to the ceiling.
//! - **From latency** (`slots = "auto"` on an engine that reports nothing, like Ollama):
//!   starting at 1, the limit grows by one after a full round (as many short prompts as the
//!   limit) whose first tokens stayed near the unloaded baseline while every slot was used, and
//!   shrinks by a quarter as soon as one rises past twice that — the sign that requests wait
//!   inside the engine. Growing once per round, not per sample, is additive increase: per
//!   sample, the requests that still ran at the baseline would outvote the one that waited.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use crate::backend::engine_load::EngineLoad;
use crate::routing::config::Slots;

/// KV-cache use from which an engine counts as saturated.
pub const KV_SATURATED: f64 = 0.95;

/// Why the limit has its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `slots = N`, as configured.
    Configured,
    /// The engine's own report.
    Engine,
    /// Learned from first-token latency.
    Latency,
}

impl Source {
    const ALL: [Self; 3] = [Self::Configured, Self::Engine, Self::Latency];

    pub fn name(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Engine => "engine",
            Self::Latency => "latency",
        }
    }
}

/// A change of the limit, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub from: usize,
    pub to: usize,
    pub why: &'static str,
}

/// What only the learning paths read and write (under one lock, so a report and a latency
/// sample never interleave); the limit, saturation and source that routing reads on every
/// pick are atomics beside it, written while this lock is held.
#[derive(Debug)]
struct State {
    /// The engine answered a load report (then latency teaches nothing).
    reports: bool,
    /// Lowest recent first-token time of a short prompt.
    baseline: Option<Duration>,
    /// Samples at the baseline with every slot used since the limit last moved.
    at_baseline: usize,
    /// Polls in a row that found no report.
    silent_polls: u32,
}

/// One endpoint's capacity.
#[derive(Debug)]
pub struct Capacity {
    ceiling: usize,
    auto: bool,
    limit: AtomicUsize,
    saturated: AtomicBool,
    source: AtomicU8,
    state: Mutex<State>,
}

impl Capacity {
    pub fn new(slots: Slots) -> Self {
        let (limit, source) = match slots {
            Slots::Fixed(slots) => (slots, Source::Configured),
            Slots::Auto => (1, Source::Latency),
        };
        Self {
            ceiling: slots.ceiling().max(1),
            auto: slots == Slots::Auto,
            limit: AtomicUsize::new(limit.max(1)),
            saturated: AtomicBool::new(false),
            source: AtomicU8::new(source as u8),
            state: Mutex::new(State {
                reports: false,
                baseline: None,
                at_baseline: 0,
                silent_polls: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests it takes at once now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The engine reports work waiting inside it: it takes nothing more until that drains.
    pub fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Where the limit comes from.
    pub fn source(&self) -> Source {
        Source::ALL
            .get(usize::from(self.source.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(Source::Configured)
    }

    /// A poll found no report (an engine without `/metrics`); returns how many in a row.
    pub fn silent(&self) -> u32 {
        let mut state = self.state();
        state.silent_polls = state.silent_polls.saturating_add(1);
        state.silent_polls
    }

    /// Polls in a row that found no report.
    pub fn silent_polls(&self) -> u32 {
        self.state().silent_polls
    }

    /// An engine report; `outstanding` is how many of our requests it has now.
    pub fn apply(&self, load: &EngineLoad, outstanding: usize) -> Option<Moved> {
        let mut state = self.state();
        state.reports = true;
        state.silent_polls = 0;
        let ceiling = load
            .total_slots
            .map_or(self.ceiling, |slots| slots.clamp(1, self.ceiling));
        let waiting = load.waiting.is_some_and(|waiting| waiting >= 1.0);
        let full = load.kv_cache.is_some_and(|used| used >= KV_SATURATED);
        let saturated = waiting || full;
        self.saturated.store(saturated, Ordering::Relaxed);
        let from = self.limit();
        let (to, why) = if saturated {
            let running = load
                .running
                .map_or(outstanding, |running| running.round() as usize);
            (running.clamp(1, ceiling), "engine saturated")
        } else if load.total_slots.is_some() {
            (ceiling, "engine slots")
        } else {
            ((from + 1).min(ceiling), "engine clear")
        };
        self.limit.store(to, Ordering::Relaxed);
        if load.total_slots.is_some() || saturated || self.auto {
            self.source.store(Source::Engine as u8, Ordering::Relaxed);
        }
        (to != from).then_some(Moved { from, to, why })
    }

    /// A short prompt's first token after `ttft`, with `outstanding` of our requests on the
    /// engine: learns the limit of an `"auto"` endpoint whose engine reports nothing.
    pub fn learn(&self, ttft: Duration, outstanding: usize) -> Option<Moved> {
        if !self.auto {
            return None;
        }
        let mut state = self.state();
        if state.reports {
            return None;
        }
        // The baseline follows the lowest first token, and drifts up slowly so a permanent
        // change (a bigger model) is learned too.
        let baseline = state
            .baseline
            .map_or(ttft, |baseline| baseline.mul_f64(1.01).min(ttft));
        state.baseline = Some(baseline);
        let from = self.limit();
        let (to, why) = if ttft > baseline * 2 + Duration::from_millis(5) {
            state.at_baseline = 0;
            (
                from - (from / 4).max(1).min(from - 1),
                "first token slower than twice the baseline",
            )
        } else if outstanding >= from {
            state.at_baseline += 1;
            if state.at_baseline >= from {
                state.at_baseline = 0;
                (
                    (from + 1).min(self.ceiling),
                    "a round with every slot used at the baseline",
                )
            } else {
                (from, "")
            }
        } else {
            (from, "")
        };
        let to = to.max(1);
        self.limit.store(to, Ordering::Relaxed);
        (to != from).then_some(Moved { from, to, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn load(running: f64, waiting: f64, total_slots: Option<usize>) -> EngineLoad {
        EngineLoad {
            running: Some(running),
            waiting: Some(waiting),
            kv_cache: None,
            total_slots,
        }
    }

    #[test]
    fn a_configured_number_is_a_ceiling_the_engine_can_only_lower() {
        let capacity = Capacity::new(Slots::Fixed(16));
        assert_eq!(capacity.limit(), 16);
        let moved = capacity.apply(&load(4.0, 0.0, Some(4)), 4).unwrap();
        assert_eq!((moved.from, moved.to), (16, 4));
        assert_eq!(capacity.source(), Source::Engine);
        let small = Capacity::new(Slots::Fixed(2));
        assert_eq!(
            small.apply(&load(2.0, 0.0, Some(8)), 2),
            None,
            "never above 2"
        );
        assert_eq!(small.limit(), 2);
    }

    #[test]
    fn saturation_holds_work_and_the_limit_grows_back_when_clear() {
        let capacity = Capacity::new(Slots::Fixed(16));
        capacity.apply(&load(6.0, 3.0, None), 9);
        assert!(capacity.saturated());
        assert_eq!(capacity.limit(), 6, "what the engine runs");
        capacity.apply(&load(5.0, 0.0, None), 5);
        assert!(!capacity.saturated());
        assert_eq!(capacity.limit(), 7, "one more per clear report");
        let full = EngineLoad {
            kv_cache: Some(0.97),
            ..load(7.0, 0.0, None)
        };
        capacity.apply(&full, 7);
        assert!(capacity.saturated(), "KV cache nearly full");
    }

    #[test]
    fn silent_polls_count_until_a_report_comes() {
        let capacity = Capacity::new(Slots::Fixed(4));
        assert_eq!((capacity.silent(), capacity.silent()), (1, 2));
        capacity.apply(&load(1.0, 0.0, None), 1);
        assert_eq!(capacity.silent_polls(), 0);
    }

    #[test]
    fn auto_learns_from_latency_when_the_engine_reports_nothing() {
        let capacity = Capacity::new(Slots::Auto);
        assert_eq!(capacity.limit(), 1);
        for used in 1..4 {
            for _ in 0..used {
                capacity.learn(50 * MS, used);
            }
        }
        assert_eq!(
            capacity.limit(),
            4,
            "grew by one per round while every slot was used at the baseline"
        );
        for _ in 0..3 {
            capacity.learn(50 * MS, 4);
        }
        assert_eq!(capacity.limit(), 4, "not before a whole round of 4");
        let moved = capacity.learn(300 * MS, 4).unwrap();
        assert_eq!((moved.from, moved.to), (4, 3));
        assert_eq!(
            capacity.learn(300 * MS, 1),
            Some(Moved {
                from: 3,
                to: 2,
                why: moved.why
            })
        );
        assert_eq!(Capacity::new(Slots::Fixed(4)).learn(300 * MS, 4), None);
        // Once the engine reports, latency teaches nothing.
        capacity.apply(&load(4.0, 0.0, Some(4)), 2);
        assert_eq!(capacity.learn(300 * MS, 4), None);
        assert_eq!(capacity.limit(), 4);
    }
}

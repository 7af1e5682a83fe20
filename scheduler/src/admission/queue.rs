//! The wait queue's order, as pure data (no locks, no clocks of its own): which waiting request
//! gets the next free slot, and which one gives way when the queue is full.
//!
//! - **Classes with aging.** Each class queue is scored by its oldest entry's arrival time plus
//!   `rank × aging` (critical 0, interactive 1, batch 2): a class-k request is treated as if it
//!   had arrived k×aging later. Higher classes go first, yet a batch request that has waited
//!   2×aging longer than the oldest critical one is served before it, so nothing starves.
//! - **Token-fair queuing inside a class.** Each tenant has a FIFO; entries get virtual finish
//!   tags (`start = max(class clock, tenant's last finish)`, `finish = start + work/weight`,
//!   where `work` is the request's weighted tokens, prompt and completion), and the smallest tag
//!   goes next — a Virtual Token Counter: backlogged tenants of equal weight are served equal
//!   tokens, whatever their prompt lengths. When a request ends, its real usage corrects its
//!   tenant's tags ([`WaitQueue::charge`]). A tenant with a deep backlog has far-future tags,
//!   so a light tenant's new request is served after at most about one slot release.
//! - **Displacement.** When full, a newcomer may take the place of the newest entry of a strictly
//!   lower class, or, within its own class, of the tenant holding the most places (if that tenant
//!   holds more than the newcomer's tenant would).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Cost;

/// Admission class, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Critical = 0,
    Interactive = 1,
    Batch = 2,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Critical, Class::Interactive, Class::Batch];

    /// The word used in headers, logs and events.
    pub fn name(self) -> &'static str {
        match self {
            Class::Critical => "critical",
            Class::Interactive => "interactive",
            Class::Batch => "batch",
        }
    }

    fn rank(self) -> u32 {
        self as u32
    }
}

/// A request about to join the queue.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub id: u64,
    pub tenant: Arc<str>,
    pub class: Class,
    /// The tenant's fair-share weight.
    pub weight: u32,
    /// Encoded size, counted against the byte bound.
    pub bytes: usize,
    /// Prompt and completion tokens it is estimated at (queue depth in tokens).
    pub cost: Cost,
    /// Its weighted tokens: how far it moves its tenant's virtual time (times the weight).
    pub work: f64,
    pub enqueued: Instant,
}

/// The requests served before an arrival, and their tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ahead {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Ahead {
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    fn count(mut self, cost: Cost) -> Self {
        self.requests += 1;
        self.prompt_tokens += u64::from(cost.prompt_tokens);
        self.completion_tokens += u64::from(cost.completion_tokens);
        self
    }
}

/// One waiting request.
#[derive(Debug)]
pub struct Waiting<T> {
    pub id: u64,
    pub tenant: Arc<str>,
    pub class: Class,
    pub bytes: usize,
    pub cost: Cost,
    pub enqueued: Instant,
    start: f64,
    finish: f64,
    pub payload: T,
}

#[derive(Debug)]
struct TenantQueue<T> {
    entries: VecDeque<Waiting<T>>,
    last_finish: f64,
}

#[derive(Debug)]
struct ClassQueue<T> {
    tenants: HashMap<Arc<str>, TenantQueue<T>>,
    clock: f64,
    len: usize,
    tokens: u64,
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            clock: 0.0,
            len: 0,
            tokens: 0,
        }
    }
}

impl<T> ClassQueue<T> {
    fn oldest(&self) -> Option<Instant> {
        self.tenants
            .values()
            .filter_map(|t| t.entries.front())
            .map(|e| e.enqueued)
            .min()
    }

    /// The tenant whose head entry has the smallest finish tag (ties: the older entry).
    fn next_tenant(&self) -> Option<Arc<str>> {
        self.tenants
            .iter()
            .filter_map(|(name, queue)| queue.entries.front().map(|head| (name, head)))
            .min_by(|(_, a), (_, b)| {
                a.finish
                    .total_cmp(&b.finish)
                    .then(a.enqueued.cmp(&b.enqueued))
            })
            .map(|(name, _)| Arc::clone(name))
    }
}

/// Waiting requests of one pool, in service order.
#[derive(Debug)]
pub struct WaitQueue<T> {
    classes: [ClassQueue<T>; 3],
    len: usize,
    bytes: usize,
    aging: Duration,
}

impl<T> WaitQueue<T> {
    /// An empty queue where one class step is worth `aging` of waiting.
    pub fn new(aging: Duration) -> Self {
        Self {
            classes: Default::default(),
            len: 0,
            bytes: 0,
            aging,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Waiting requests of `class`.
    pub fn len_of(&self, class: Class) -> usize {
        self.classes[class as usize].len
    }

    /// When the longest-waiting request of `class` arrived.
    pub fn oldest_of(&self, class: Class) -> Option<Instant> {
        self.classes[class as usize].oldest()
    }

    /// Waiting requests per tenant, over every class.
    pub fn waiting_by_tenant(&self) -> HashMap<Arc<str>, u32> {
        let mut waiting: HashMap<Arc<str>, u32> = HashMap::new();
        for class in &self.classes {
            for (tenant, queue) in &class.tenants {
                if !queue.entries.is_empty() {
                    *waiting.entry(Arc::clone(tenant)).or_default() += queue.entries.len() as u32;
                }
            }
        }
        waiting
    }

    /// Tokens of the waiting requests of `class`.
    pub fn tokens_of(&self, class: Class) -> u64 {
        self.classes[class as usize].tokens
    }

    /// `arrival`'s virtual start and finish tags, were it pushed now.
    fn tags(&self, arrival: &Arrival) -> (f64, f64) {
        let queue = &self.classes[arrival.class as usize];
        let last_finish = queue
            .tenants
            .get(&arrival.tenant)
            .map_or(0.0, |t| t.last_finish);
        let start = queue.clock.max(last_finish);
        // Every request moves virtual time a little, so zero-token requests still take turns.
        (
            start,
            start + arrival.work.max(1.0) / f64::from(arrival.weight.max(1)),
        )
    }

    /// The requests that would be served before `arrival`, were it pushed now: every one of
    /// a better class, and those of its class with a smaller finish tag. (Aging may reorder
    /// classes later; this is the order as it stands.)
    pub fn place_of(&self, arrival: &Arrival) -> Ahead {
        let (_, finish) = self.tags(arrival);
        let better = Class::ALL
            .iter()
            .take_while(|c| **c < arrival.class)
            .flat_map(|c| self.classes[*c as usize].tenants.values());
        let own = self.classes[arrival.class as usize]
            .tenants
            .values()
            .filter(|t| !t.entries.is_empty());
        let before_in_class = own
            .flat_map(|t| t.entries.iter())
            .filter(|e| e.finish < finish || (e.finish == finish && e.id < arrival.id));
        better
            .flat_map(|t| t.entries.iter())
            .chain(before_in_class)
            .fold(Ahead::default(), |ahead, e| ahead.count(e.cost))
    }

    /// Appends a request. Its position is [`Self::place_of`] just before, which admission has
    /// already computed for its prediction (a second scan per waiting request would double
    /// the cost of a deep queue).
    pub fn push(&mut self, arrival: Arrival, payload: T) {
        let (start, finish) = self.tags(&arrival);
        let Arrival {
            id,
            tenant,
            class,
            bytes,
            cost,
            enqueued,
            ..
        } = arrival;
        let queue = &mut self.classes[class as usize];
        let tenant_queue =
            queue
                .tenants
                .entry(Arc::clone(&tenant))
                .or_insert_with(|| TenantQueue {
                    entries: VecDeque::new(),
                    last_finish: 0.0,
                });
        tenant_queue.last_finish = finish;
        tenant_queue.entries.push_back(Waiting {
            id,
            tenant,
            class,
            bytes,
            cost,
            enqueued,
            start,
            finish,
            payload,
        });
        queue.len += 1;
        queue.tokens += cost.tokens();
        self.len += 1;
        self.bytes += bytes;
    }

    /// Corrects `tenant`'s virtual time in `class` by `extra_work` weighted tokens (real usage
    /// minus the estimate a finished request was queued with): all its waiting requests move
    /// later (it used more) or earlier (less) by the same amount, so their spacing stays. No
    /// clamp at the class clock: the clock runs ahead of a tenant whose requests are large, and
    /// a refund never exceeds what the request was charged when it was queued. A tenant with
    /// nothing waiting keeps no credit or debt.
    pub fn charge(&mut self, tenant: &str, class: Class, extra_work: f64, weight: u32) {
        let queue = &mut self.classes[class as usize];
        let Some(tenant_queue) = queue.tenants.get_mut(tenant) else {
            return;
        };
        let shift = extra_work / f64::from(weight.max(1));
        for entry in &mut tenant_queue.entries {
            entry.start += shift;
            entry.finish += shift;
        }
        tenant_queue.last_finish += shift;
    }

    /// Takes the request that should get the next free slot.
    pub fn pop_next(&mut self) -> Option<Waiting<T>> {
        let class = Class::ALL
            .iter()
            .filter_map(|class| {
                let oldest = self.classes[*class as usize].oldest()?;
                Some((oldest + self.aging * class.rank(), *class))
            })
            .min()
            .map(|(_, class)| class)?;
        let queue = &mut self.classes[class as usize];
        let tenant = queue.next_tenant()?;
        let tenant_queue = queue.tenants.get_mut(&tenant)?;
        let entry = tenant_queue.entries.pop_front()?;
        if tenant_queue.entries.is_empty() {
            // An idle tenant keeps no credit: its next request starts at the class clock.
            queue.tenants.remove(&tenant);
        }
        queue.clock = queue.clock.max(entry.start);
        queue.len -= 1;
        queue.tokens -= entry.cost.tokens();
        self.len -= 1;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    /// Removes a request that left (cancelled, timed out); `None` if it is no longer waiting.
    pub fn remove(&mut self, id: u64, class: Class, tenant: &str) -> Option<Waiting<T>> {
        let queue = &mut self.classes[class as usize];
        let tenant_queue = queue.tenants.get_mut(tenant)?;
        let index = tenant_queue.entries.iter().position(|e| e.id == id)?;
        let entry = tenant_queue.entries.remove(index)?;
        if tenant_queue.entries.is_empty() {
            queue.tenants.remove(tenant);
        }
        queue.len -= 1;
        queue.tokens -= entry.cost.tokens();
        self.len -= 1;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    /// The request a newcomer of `class` from `tenant` may displace when the queue is full:
    /// the newest entry of the lowest class strictly below the newcomer's; else, in the
    /// newcomer's own class, the newest entry of the tenant holding the most places, if that
    /// tenant holds at least two more than the newcomer's tenant.
    pub fn displaceable(&self, class: Class, tenant: &str) -> Option<(u64, Class, Arc<str>)> {
        let newest_of = |queue: &TenantQueue<T>| {
            queue
                .entries
                .back()
                .map(|e| (e.id, e.class, Arc::clone(&e.tenant)))
        };
        for lower in Class::ALL.iter().rev().filter(|c| **c > class) {
            let candidate = self.classes[*lower as usize]
                .tenants
                .values()
                .filter_map(|t| t.entries.back())
                .max_by_key(|e| (e.enqueued, e.id));
            if let Some(entry) = candidate {
                return Some((entry.id, entry.class, Arc::clone(&entry.tenant)));
            }
        }
        let own = &self.classes[class as usize];
        let newcomer_holds = own.tenants.get(tenant).map_or(0, |t| t.entries.len());
        let (_, heaviest) = own
            .tenants
            .iter()
            .max_by_key(|(name, t)| (t.entries.len(), std::cmp::Reverse(Arc::clone(name))))?;
        (heaviest.entries.len() >= newcomer_holds + 2)
            .then(|| newest_of(heaviest))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGING: Duration = Duration::from_secs(10);

    struct Fixture {
        queue: WaitQueue<()>,
        next_id: u64,
        now: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                queue: WaitQueue::new(AGING),
                next_id: 0,
                now: Instant::now(),
            }
        }

        fn push(&mut self, tenant: &str, class: Class, weight: u32) -> u64 {
            self.push_work(tenant, class, weight, 1)
        }

        fn push_work(&mut self, tenant: &str, class: Class, weight: u32, tokens: u32) -> u64 {
            self.next_id += 1;
            self.now += Duration::from_millis(1);
            self.queue
                .push(self.arrival(tenant, class, weight, tokens), ());
            self.next_id
        }

        fn arrival(&self, tenant: &str, class: Class, weight: u32, tokens: u32) -> Arrival {
            Arrival {
                id: self.next_id,
                tenant: tenant.into(),
                class,
                weight,
                bytes: 10,
                cost: Cost {
                    prompt_tokens: tokens,
                    completion_tokens: 0,
                },
                work: f64::from(tokens),
                enqueued: self.now,
            }
        }

        fn order(&mut self) -> Vec<(String, Class)> {
            std::iter::from_fn(|| self.queue.pop_next())
                .map(|e| (e.tenant.to_string(), e.class))
                .collect()
        }
    }

    #[test]
    fn higher_classes_go_first_fifo_within_a_tenant() {
        let mut f = Fixture::new();
        let b = f.push("t", Class::Batch, 1);
        let i1 = f.push("t", Class::Interactive, 1);
        let c = f.push("t", Class::Critical, 1);
        let i2 = f.push("t", Class::Interactive, 1);
        let ids: Vec<u64> = std::iter::from_fn(|| f.queue.pop_next())
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![c, i1, i2, b]);
        assert_eq!((f.queue.len(), f.queue.bytes()), (0, 0));
    }

    #[test]
    fn a_light_tenant_overtakes_a_flooding_one() {
        let mut f = Fixture::new();
        for _ in 0..20 {
            f.push("flood", Class::Interactive, 1);
        }
        f.queue.pop_next();
        f.push("light", Class::Interactive, 1);
        let order = f.order();
        let light_at = order.iter().position(|(t, _)| t == "light").unwrap();
        assert!(
            light_at <= 1,
            "light tenant served within one release, was {light_at}"
        );
    }

    #[test]
    fn weights_share_slots_in_proportion() {
        let mut f = Fixture::new();
        for _ in 0..30 {
            f.push("heavy", Class::Batch, 3);
            f.push("normal", Class::Batch, 1);
        }
        let first_twelve: Vec<_> = f.order().into_iter().take(12).collect();
        let heavy = first_twelve.iter().filter(|(t, _)| t == "heavy").count();
        assert_eq!(heavy, 9, "weight 3 : 1 gets 3 of every 4 slots");
    }

    #[test]
    fn aging_lets_an_old_batch_request_pass_fresh_critical_ones() {
        let mut f = Fixture::new();
        f.push("t", Class::Batch, 1);
        f.now += AGING * 2 + Duration::from_secs(1);
        f.push("t", Class::Critical, 1);
        assert_eq!(f.order()[0].1, Class::Batch);

        let mut f = Fixture::new();
        f.push("t", Class::Batch, 1);
        f.now += AGING;
        f.push("t", Class::Critical, 1);
        assert_eq!(f.order()[0].1, Class::Critical, "not yet aged enough");
    }

    #[test]
    fn positions_count_who_goes_first() {
        let mut f = Fixture::new();
        f.push("a", Class::Batch, 1);
        f.push("a", Class::Interactive, 1);
        f.push("a", Class::Interactive, 1);
        f.next_id += 1;
        let b = f.arrival("b", Class::Interactive, 1, 1);
        assert_eq!(
            f.queue.place_of(&b).requests,
            1,
            "b's first request goes right after a's first interactive one"
        );
        f.queue.push(b, ());
        f.next_id += 1;
        let critical = f.arrival("c", Class::Critical, 1, 1);
        assert_eq!(f.queue.place_of(&critical).requests, 0);
    }

    #[test]
    fn displacement_prefers_the_newest_of_the_lowest_class_then_the_heaviest_tenant() {
        let mut f = Fixture::new();
        let _old_batch = f.push("x", Class::Batch, 1);
        let new_batch = f.push("y", Class::Batch, 1);
        f.push("z", Class::Interactive, 1);
        let (id, class, _) = f.queue.displaceable(Class::Interactive, "n").unwrap();
        assert_eq!((id, class), (new_batch, Class::Batch));
        assert!(
            f.queue.displaceable(Class::Batch, "x").is_none(),
            "equal tenants: nobody gives way"
        );

        let mut f = Fixture::new();
        f.push("flood", Class::Interactive, 1);
        let newest_flood = f.push("flood", Class::Interactive, 1);
        f.push("other", Class::Interactive, 1);
        let (id, _, tenant) = f.queue.displaceable(Class::Interactive, "light").unwrap();
        assert_eq!((id, &*tenant), (newest_flood, "flood"));
        assert!(f.queue.displaceable(Class::Interactive, "flood").is_none());
    }

    /// Tokens served per tenant over the first `turns` pops.
    fn served_tokens(f: &mut Fixture, turns: usize, sizes: &[(&str, u32)]) -> Vec<u64> {
        let mut served = vec![0; sizes.len()];
        for _ in 0..turns {
            let entry = f.queue.pop_next().unwrap();
            let at = sizes
                .iter()
                .position(|(t, _)| *t == &*entry.tenant)
                .unwrap();
            served[at] += entry.cost.tokens();
            // Closed loop: the tenant sends its next request of the same size.
            f.push_work(sizes[at].0, Class::Interactive, 1, sizes[at].1);
        }
        served
    }

    #[test]
    fn backlogged_tenants_get_equal_tokens_whatever_their_prompt_lengths() {
        let mut f = Fixture::new();
        let sizes = [("long", 404), ("short", 12)];
        for _ in 0..4 {
            f.push_work("long", Class::Interactive, 1, 404);
            f.push_work("short", Class::Interactive, 1, 12);
        }
        let served = served_tokens(&mut f, 2000, &sizes);
        let ratio = served[0] as f64 / served[1] as f64;
        assert!((0.9..1.1).contains(&ratio), "long/short tokens {served:?}");
    }

    #[test]
    fn estimates_corrected_by_real_usage_still_give_equal_tokens() {
        // Queued at their estimates (the scheduler's byte count and a 4-token cap), charged
        // what the engine reported: 612 → 404 and 24 → 12 tokens.
        let mut f = Fixture::new();
        let (estimate, actual) = ([("long", 612u32), ("short", 24)], [404u64, 12]);
        for _ in 0..4 {
            for (tenant, tokens) in estimate {
                f.push_work(tenant, Class::Interactive, 1, tokens);
            }
        }
        let mut served = [0u64; 2];
        for _ in 0..3000 {
            let entry = f.queue.pop_next().unwrap();
            let at = usize::from(&*entry.tenant == "short");
            served[at] += actual[at];
            let extra = actual[at] as f64 - entry.cost.tokens() as f64;
            f.queue.charge(&entry.tenant, Class::Interactive, extra, 1);
            f.push_work(estimate[at].0, Class::Interactive, 1, estimate[at].1);
        }
        let ratio = served[0] as f64 / served[1] as f64;
        assert!((0.9..1.1).contains(&ratio), "long/short tokens {served:?}");
    }

    #[test]
    fn real_usage_corrects_the_tenants_virtual_time() {
        let mut f = Fixture::new();
        // Both queued at 10 tokens each; "big" really used 100 for its first one.
        let big = f.push_work("big", Class::Interactive, 1, 10);
        f.push_work("big", Class::Interactive, 1, 10);
        f.push_work("small", Class::Interactive, 1, 10);
        f.push_work("small", Class::Interactive, 1, 10);
        assert_eq!(f.queue.pop_next().unwrap().id, big);
        f.queue.charge("big", Class::Interactive, 90.0, 1);
        let order: Vec<String> = f.order().into_iter().map(|(t, _)| t).collect();
        assert_eq!(order, ["small", "small", "big"]);
        assert_eq!(f.queue.tokens_of(Class::Interactive), 0);
    }

    #[test]
    fn tokens_ahead_count_better_classes_and_earlier_tags() {
        let mut f = Fixture::new();
        f.push_work("a", Class::Critical, 1, 100);
        f.push_work("a", Class::Interactive, 1, 50);
        f.push_work("b", Class::Batch, 1, 70);
        f.next_id += 1;
        let ahead = f.queue.place_of(&f.arrival("c", Class::Interactive, 1, 80));
        assert_eq!(
            (ahead.requests, ahead.tokens()),
            (2, 150),
            "critical + a's smaller tag"
        );
        let small = f.queue.place_of(&f.arrival("d", Class::Interactive, 1, 5));
        assert_eq!(small.tokens(), 100, "a small request passes a's bigger one");
        assert_eq!(f.queue.tokens_of(Class::Batch), 70);
    }

    #[test]
    fn removing_keeps_counts_exact() {
        let mut f = Fixture::new();
        let a = f.push("t", Class::Interactive, 1);
        let b = f.push("t", Class::Interactive, 1);
        assert!(f.queue.remove(a, Class::Interactive, "t").is_some());
        assert!(f.queue.remove(a, Class::Interactive, "t").is_none());
        assert_eq!(
            (
                f.queue.len(),
                f.queue.bytes(),
                f.queue.len_of(Class::Interactive)
            ),
            (1, 10, 1)
        );
        assert_eq!(f.queue.pop_next().unwrap().id, b);
        assert!(f.queue.is_empty());
    }
}

//! The wait queue's order, as pure data (no locks, no clocks of its own): which waiting request
//! gets the next free slot, and which one gives way when the queue is full.
//!
//! - **Classes with aging.** Each class queue is scored by its oldest entry's arrival time plus
//!   `rank × aging` (critical 0, interactive 1, batch 2): a class-k request is treated as if it
//!   had arrived k×aging later. Higher classes go first, yet a batch request that has waited
//!   2×aging longer than the oldest critical one is served before it, so nothing starves.
//! - **Weighted fair queuing inside a class.** Each tenant has a FIFO; entries get virtual finish
//!   tags (`start = max(class clock, tenant's last finish)`, `finish = start + 1/weight`), and the
//!   smallest tag goes next. A tenant with a deep backlog has far-future tags, so a light tenant's
//!   new request is served after at most about one slot release.
//! - **Displacement.** When full, a newcomer may take the place of the newest entry of a strictly
//!   lower class, or, within its own class, of the tenant holding the most places (if that tenant
//!   holds more than the newcomer's tenant would).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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

/// One waiting request.
#[derive(Debug)]
pub struct Waiting<T> {
    pub id: u64,
    pub tenant: Arc<str>,
    pub class: Class,
    pub bytes: usize,
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
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            clock: 0.0,
            len: 0,
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

    /// Appends a request; returns its 1-based position in service order at this moment.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        id: u64,
        tenant: Arc<str>,
        class: Class,
        weight: u32,
        bytes: usize,
        enqueued: Instant,
        payload: T,
    ) -> usize {
        let queue = &mut self.classes[class as usize];
        let tenant_queue =
            queue
                .tenants
                .entry(Arc::clone(&tenant))
                .or_insert_with(|| TenantQueue {
                    entries: VecDeque::new(),
                    last_finish: 0.0,
                });
        let start = queue.clock.max(tenant_queue.last_finish);
        let finish = start + 1.0 / f64::from(weight.max(1));
        tenant_queue.last_finish = finish;
        tenant_queue.entries.push_back(Waiting {
            id,
            tenant,
            class,
            bytes,
            enqueued,
            start,
            finish,
            payload,
        });
        queue.len += 1;
        self.len += 1;
        self.bytes += bytes;
        let ahead_in_class = queue
            .tenants
            .values()
            .flat_map(|t| t.entries.iter())
            .filter(|e| e.finish < finish || (e.finish == finish && e.id < id))
            .count();
        let ahead_in_better_classes: usize = Class::ALL
            .iter()
            .take_while(|c| **c < class)
            .map(|c| self.len_of(*c))
            .sum();
        ahead_in_better_classes + ahead_in_class + 1
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
            self.next_id += 1;
            self.now += Duration::from_millis(1);
            self.queue
                .push(self.next_id, tenant.into(), class, weight, 10, self.now, ());
            self.next_id
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
        let position = f
            .queue
            .push(f.next_id, "b".into(), Class::Interactive, 1, 10, f.now, ());
        assert_eq!(
            position, 2,
            "b's first request goes right after a's first interactive one"
        );
        f.next_id += 1;
        let critical = f
            .queue
            .push(f.next_id, "c".into(), Class::Critical, 1, 10, f.now, ());
        assert_eq!(critical, 1);
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

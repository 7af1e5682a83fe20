//! Policy tests under `tokio::time::pause()`: exact and instant.

use super::*;

fn pool(slots: usize, max_queue: usize, max_wait_ms: u64) -> Arc<Admission> {
    Admission::new(
        "test",
        Limits::new(slots, max_queue, Duration::from_millis(max_wait_ms)),
    )
}

fn ask(tenant: &str, class: Class) -> Ask {
    Ask {
        tenant: tenant.into(),
        class,
        bytes: 100,
        cost: Cost::default(),
        completion_capped: true,
        slo: None,
        slo_tpot: None,
    }
}

fn admitted(entry: Entry) -> SlotPermit {
    match entry {
        Entry::Admitted(permit) => permit,
        Entry::Waiting(_) => panic!("expected a free slot"),
    }
}

fn waiting(entry: Entry) -> WaitTicket {
    match entry {
        Entry::Waiting(ticket) => ticket,
        Entry::Admitted(_) => panic!("expected to wait"),
    }
}

/// Enqueues waiters that record, in order, which of them got a slot.
struct Recorder {
    order: Arc<Mutex<Vec<&'static str>>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), &'static str>>>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            order: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn wait(&mut self, pool: &Arc<Admission>, name: &'static str, tenant: &str, class: Class) {
        self.wait_with(pool, name, ask(tenant, class));
    }

    fn wait_with(&mut self, pool: &Arc<Admission>, name: &'static str, ask: Ask) {
        let ticket = waiting(pool.enter(ask).unwrap());
        let order = Arc::clone(&self.order);
        self.tasks.push(tokio::spawn(async move {
            let permit = ticket.wait().await.map_err(|_| name)?;
            order.lock().unwrap().push(name);
            // Hold the slot for a moment so the next grant comes from this release.
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
            Ok(())
        }));
    }

    async fn finish(self) -> Vec<&'static str> {
        for task in self.tasks {
            let _ = task.await.unwrap();
        }
        Arc::try_unwrap(self.order).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn free_slot_runs_at_once_then_queue_then_refusal() {
    let pool = pool(1, 1, 1000);
    let running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let ticket = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    assert_eq!(ticket.position(), 1);
    let refused = pool.enter(ask("t", Class::Interactive)).unwrap_err();
    assert_eq!(refused.reason().as_str(), "queue_full");
    let waiter = tokio::spawn(ticket.wait());
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(running);
    let permit = waiter.await.unwrap().unwrap();
    assert_eq!(permit.queued(), Duration::from_millis(300));
    assert_eq!((pool.waiting(), pool.running()), (0, 1));
    drop(permit);
    assert_eq!(pool.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn classes_are_served_best_first() {
    let pool = pool(1, 10, 60_000);
    let running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let mut recorder = Recorder::new();
    recorder.wait(&pool, "batch", "t", Class::Batch);
    recorder.wait(&pool, "interactive", "t", Class::Interactive);
    recorder.wait(&pool, "critical", "t", Class::Critical);
    drop(running);
    assert_eq!(
        recorder.finish().await,
        vec!["critical", "interactive", "batch"]
    );
}

#[tokio::test(start_paused = true)]
async fn aging_serves_a_long_waiting_batch_request_before_new_critical_ones() {
    let mut limits = Limits::new(1, 10, Duration::from_secs(600));
    limits.aging = Duration::from_secs(10);
    let pool = Admission::new("test", limits);
    let running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let mut recorder = Recorder::new();
    recorder.wait(&pool, "batch", "t", Class::Batch);
    tokio::time::sleep(Duration::from_secs(21)).await;
    recorder.wait(&pool, "critical", "t", Class::Critical);
    drop(running);
    assert_eq!(recorder.finish().await, vec!["batch", "critical"]);
}

#[tokio::test(start_paused = true)]
async fn a_light_tenant_is_not_stuck_behind_a_flooding_one() {
    let pool = pool(1, 100, 60_000);
    let running = admitted(pool.enter(ask("flood", Class::Interactive)).unwrap());
    let mut recorder = Recorder::new();
    for _ in 0..10 {
        recorder.wait(&pool, "flood", "flood", Class::Interactive);
    }
    recorder.wait(&pool, "light", "light", Class::Interactive);
    drop(running);
    let order = recorder.finish().await;
    assert!(
        order.iter().position(|n| *n == "light").unwrap() <= 1,
        "{order:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_higher_class_displaces_the_newest_lowest_waiter() {
    let pool = pool(1, 2, 60_000);
    let _running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let old_batch = waiting(pool.enter(ask("t", Class::Batch)).unwrap());
    let new_batch = waiting(pool.enter(ask("t", Class::Batch)).unwrap());
    let critical = pool.enter(ask("t", Class::Critical)).unwrap();
    assert!(matches!(critical, Entry::Waiting(_)));
    let refused = new_batch.wait().await.unwrap_err();
    assert_eq!(refused.reason().as_str(), "displaced");
    assert_eq!(pool.waiting(), 2);
    // Same class, same tenant share: nobody gives way, the newcomer is refused.
    assert_eq!(
        pool.enter(ask("t", Class::Batch))
            .unwrap_err()
            .reason()
            .as_str(),
        "queue_full"
    );
    drop(old_batch);
    assert_eq!(pool.waiting(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_byte_bound_refuses_like_the_count_bound() {
    let mut limits = Limits::new(1, 100, Duration::from_secs(60));
    limits.max_queue_bytes = 250;
    let pool = Admission::new("test", limits);
    let _running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let _a = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    let _b = waiting(pool.enter(ask("u", Class::Interactive)).unwrap());
    assert_eq!(
        pool.enter(ask("v", Class::Interactive))
            .unwrap_err()
            .reason()
            .as_str(),
        "queue_full"
    );
    let huge = Ask {
        bytes: 1000,
        ..ask("w", Class::Critical)
    };
    assert_eq!(
        pool.enter(huge).unwrap_err().reason().as_str(),
        "queue_full"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_expires_with_queue_timeout_and_leaves_the_queue() {
    let pool = pool(1, 4, 500);
    let _running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let ticket = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    let started = Instant::now();
    let err = ticket.wait().await.unwrap_err();
    assert_eq!(err.reason().as_str(), "queue_timeout");
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!(pool.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_never_takes_a_slot() {
    let pool = pool(1, 4, 10_000);
    let running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let first = tokio::spawn(waiting(pool.enter(ask("t", Class::Interactive)).unwrap()).wait());
    let second = tokio::spawn(waiting(pool.enter(ask("t", Class::Interactive)).unwrap()).wait());
    tokio::task::yield_now().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(pool.waiting(), 1);
    drop(running);
    let permit = second.await.unwrap().unwrap();
    assert_eq!(pool.running(), 1);
    drop(permit);
    assert_eq!((pool.running(), pool.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slot_granted_to_a_waiter_that_then_leaves_is_passed_on() {
    let pool = pool(1, 4, 10_000);
    let running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let granted_then_dropped = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    let next = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    drop(running); // the slot goes to the first waiter, who has not looked yet
    assert_eq!(pool.running(), 1);
    drop(granted_then_dropped); // ... and leaves: the slot moves on
    let permit = next.wait().await.unwrap();
    assert_eq!((pool.running(), pool.waiting()), (1, 0));
    drop(permit);
    assert_eq!(pool.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_exit_path_releases_the_permit() {
    let pool = pool(2, 4, 10_000);
    // Normal end.
    drop(admitted(pool.enter(ask("t", Class::Interactive)).unwrap()));
    // Inside a stream that is dropped half-way.
    let permit = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let stream = async_stream::stream! {
        let _permit = permit;
        yield 1;
        futures::future::pending::<()>().await;
        yield 2;
    };
    let mut stream = Box::pin(stream);
    assert_eq!(futures::StreamExt::next(&mut stream).await, Some(1));
    assert_eq!(pool.running(), 1);
    drop(stream);
    // Inside a task that panics.
    let permit = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let panicked = tokio::spawn(async move {
        let _permit = permit;
        panic!("generation failed");
    });
    assert!(panicked.await.unwrap_err().is_panic());
    assert_eq!(pool.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn weights_are_honoured() {
    let mut limits = Limits::new(1, 100, Duration::from_secs(600));
    limits.weights.insert("gold".to_owned(), 3);
    let pool = Admission::new("test", limits);
    let running = admitted(pool.enter(ask("x", Class::Batch)).unwrap());
    let mut recorder = Recorder::new();
    for _ in 0..8 {
        recorder.wait(&pool, "gold", "gold", Class::Batch);
        recorder.wait(&pool, "plain", "plain", Class::Batch);
    }
    drop(running);
    let order = recorder.finish().await;
    let gold_in_first_eight = order.iter().take(8).filter(|n| **n == "gold").count();
    assert_eq!(gold_in_first_eight, 6, "{order:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_follows_the_observed_hold_time() {
    let pool = pool(2, 0, 60_000);
    for _ in 0..2 {
        let permit = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
        tokio::time::sleep(Duration::from_secs(4)).await;
        drop(permit);
    }
    let _a = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let _b = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let SchedulerError::QueueFull { retry_after, .. } =
        pool.enter(ask("t", Class::Interactive)).unwrap_err()
    else {
        panic!()
    };
    // (0 waiting + 1) / 2 slots × 4 s hold = 2 s.
    assert_eq!(retry_after, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_refused_at_once_when_the_pool_loses_all_capacity() {
    // Every endpoint's breaker opened while requests queued: they are told now, as a newcomer
    // would be, instead of waiting out the queue timeout.
    let pool = pool(1, 4, 30_000);
    let _running = admitted(pool.enter(ask("t", Class::Interactive)).unwrap());
    let ticket = waiting(pool.enter(ask("t", Class::Interactive)).unwrap());
    let started = Instant::now();
    pool.set_slots(0, false);
    let err = ticket.wait().await.unwrap_err();
    assert_eq!(err.reason().as_str(), "no_healthy_backend");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(pool.waiting(), 0);
}

/// A pool that has learned 10 ms of first token and 10 ms per further completion token.
fn paced_pool(slots: usize) -> Arc<Admission> {
    let pool = pool(slots, 16, 60_000);
    pool.pace()
        .record_first_token(10, Duration::from_millis(10));
    pool.pace().record_decode(11, Duration::from_millis(100));
    pool
}

fn costly(tenant: &str, completion_tokens: u32, slo_ms: Option<u64>) -> Ask {
    Ask {
        cost: Cost {
            prompt_tokens: 10,
            completion_tokens,
        },
        slo: slo_ms.map(Duration::from_millis),
        slo_tpot: None,
        ..ask(tenant, Class::Interactive)
    }
}

#[tokio::test(start_paused = true)]
async fn an_objective_the_work_ahead_cannot_meet_is_refused_at_once() {
    let pool = paced_pool(1);
    // One running and three waiting, each ~1 s of decoding.
    let _running = admitted(pool.enter(costly("a", 101, None)).unwrap());
    let _waiting: Vec<_> = (0..3)
        .map(|_| waiting(pool.enter(costly("a", 101, None)).unwrap()))
        .collect();
    let refused = pool.enter(costly("b", 1, Some(500))).unwrap_err();
    assert_eq!(refused.reason().as_str(), "slo_unattainable");
    let SchedulerError::SloUnattainable {
        predicted_ms,
        retry_after,
        ..
    } = refused
    else {
        unreachable!()
    };
    // b is fair-queued before a's waiters: it waits for half the running request.
    assert!(
        (500..=700).contains(&predicted_ms),
        "predicted {predicted_ms} ms"
    );
    assert_eq!(retry_after, Duration::from_secs(1));
    assert_eq!(pool.waiting(), 3, "the refused request took no place");
    // The same request of tenant a queues behind its own three: ~3.5 s.
    let refused = pool.enter(costly("a", 1, Some(3000))).unwrap_err();
    let SchedulerError::SloUnattainable { predicted_ms, .. } = refused else {
        unreachable!()
    };
    assert!(
        (3400..=3700).contains(&predicted_ms),
        "predicted {predicted_ms} ms"
    );
    let ticket = waiting(pool.enter(costly("b", 1, Some(5000))).unwrap());
    assert!(ticket.predicted() <= Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_meets_an_objective_unless_the_prompt_alone_is_too_long() {
    let pool = Admission::new(
        "test",
        Limits {
            prefill_per_token: Some(Duration::from_millis(1)),
            ..Limits::new(1, 4, Duration::from_secs(60))
        },
    );
    let permit = admitted(pool.enter(costly("a", 1, Some(50))).unwrap());
    assert_eq!(permit.predicted(), Duration::from_millis(10));
    drop(permit);
    let long_prompt = Ask {
        cost: Cost {
            prompt_tokens: 2000,
            completion_tokens: 1,
        },
        ..costly("a", 1, Some(1000))
    };
    let refused = pool.enter(long_prompt).unwrap_err();
    assert_eq!(refused.reason().as_str(), "slo_unattainable");
}

#[tokio::test(start_paused = true)]
async fn real_usage_corrects_fair_share_and_counts_served_tokens() {
    let pool = pool(1, 16, 60_000);
    let holder = admitted(pool.enter(costly("holder", 10, None)).unwrap());
    // Every request queued at 20 tokens: big-1 first, then big-2 and two of small's.
    let big_1 = waiting(pool.enter(costly("big", 10, None)).unwrap());
    let mut order = Recorder::new();
    order.wait_with(&pool, "big-2", costly("big", 10, None));
    order.wait_with(&pool, "small-1", costly("small", 10, None));
    order.wait_with(&pool, "small-2", costly("small", 10, None));
    drop(holder);
    let mut running = big_1.wait().await.unwrap();
    // big-1 really used 1,000 completion tokens, not 10: big-2 moves behind small's two.
    running.settle(Cost {
        prompt_tokens: 10,
        completion_tokens: 1000,
    });
    drop(running);
    assert_eq!(order.finish().await, vec!["small-1", "small-2", "big-2"]);
    let served: HashMap<_, _> = pool.served_tokens().into_iter().collect();
    assert_eq!(served.get("big").copied(), Some(1010 + 20));
    assert_eq!(served.get("small").copied(), Some(40));
}

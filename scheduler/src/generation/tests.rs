//! The phases with scripted backends on paused time: exact and instant. Each endpoint plays a
//! script per call (fail at once, never answer, answer and stay silent, speak and finish or
//! stall), so budgets, timeout choice, retries, fallbacks and assembly are checked exactly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatRequest, Delta, Finish, Message, Usage};
use llmgw_telemetry::TraceContext;
use tokio::time::Instant;

use super::*;
use crate::admission::{Admission, Entry, Limits};
use crate::backend::{Backend, BackendError, EventStream};
use crate::endpoint::Endpoint;
use crate::metrics::SchedulerMetrics;
use crate::routing::config::{BreakerConfig, EndpointConfig, EndpointKind, FileConfig};
use crate::routing::table::{RouteTable, Timeouts};
use crate::validated::validate;
use crate::work::Work;

/// What one backend call does.
#[derive(Debug, Clone)]
enum Script {
    /// `chat` fails at once with this HTTP status (500: backend_error; 0: unreachable).
    Fails(u16),
    /// The response head never comes.
    NeverAnswers,
    /// The head comes, then nothing.
    Silent,
    /// First piece after `first_ms`, the others `gap_ms` apart; then finish + usage, or stall.
    Speaks {
        first_ms: u64,
        gap_ms: u64,
        pieces: &'static [&'static str],
        finish: bool,
    },
}

#[derive(Debug)]
struct Scripted {
    name: String,
    scripts: Mutex<VecDeque<Script>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &str, scripts: &[Script]) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            scripts: Mutex::new(scripts.iter().cloned().collect()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Backend for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(
        &self,
        _request: Work,
        _trace: http::HeaderMap,
        _gate: crate::backend::SendGate,
    ) -> BoxFuture<'static, Result<EventStream, BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let script = {
            let mut scripts = self.scripts.lock().unwrap();
            // The last script repeats.
            if scripts.len() > 1 {
                scripts.pop_front().unwrap()
            } else {
                scripts.front().cloned().unwrap()
            }
        };
        Box::pin(async move {
            match script {
                Script::Fails(0) => Err(BackendError::Unreachable("refused".into())),
                Script::Fails(status) => Err(BackendError::Status {
                    status,
                    message: "boom".into(),
                }),
                Script::NeverAnswers => futures::future::pending().await,
                Script::Silent => Ok(stream::pending().boxed()),
                Script::Speaks {
                    first_ms,
                    gap_ms,
                    pieces,
                    finish,
                } => {
                    let timed = stream::iter(pieces.iter().enumerate()).then(move |(i, piece)| {
                        let wait = if i == 0 { first_ms } else { gap_ms };
                        async move {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            Ok(Event::Delta(Delta {
                                content: (*piece).to_owned(),
                                ..Default::default()
                            }))
                        }
                    });
                    let count = pieces.len() as u32;
                    let end: EventStream = if finish {
                        stream::iter([
                            Ok(Event::Finish(Finish {
                                reason: "stop".into(),
                                ..Default::default()
                            })),
                            Ok(Event::Usage(Usage {
                                prompt_tokens: 3,
                                completion_tokens: count,
                                prompt_counted: false,
                                cached_tokens: 0,
                            })),
                        ])
                        .boxed()
                    } else {
                        stream::pending().boxed()
                    };
                    Ok(timed.chain(end).boxed())
                }
            }
        })
    }

    fn provider(&self) -> &'static str {
        "scripted"
    }

    fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        Box::pin(async { Ok(vec![]) })
    }
}

fn pool(name: &str, slots: usize, backends: &[Arc<Scripted>]) -> Pool {
    pool_with(name, slots, backends, 100, None)
}

/// A pool whose breakers open after `failures`, with a configured prefill rate.
fn pool_with(
    name: &str,
    slots: usize,
    backends: &[Arc<Scripted>],
    failures: u32,
    prefill_per_token: Option<Duration>,
) -> Pool {
    let endpoints = backends
        .iter()
        .map(|backend| {
            let config = EndpointConfig {
                url: format!("http://{}", backend.name),
                kind: EndpointKind::Ollama,
                slots: crate::routing::config::Slots::Fixed(slots),
                api_key_env: None,
                schema_format: Default::default(),
            };
            let backend: Arc<dyn Backend> = Arc::clone(backend) as Arc<dyn Backend>;
            Arc::new(Endpoint::new(
                config,
                backend,
                BreakerConfig {
                    failures,
                    open_ms: 60_000,
                },
            ))
        })
        .collect();
    Pool {
        affinity: None,
        name: name.to_owned(),
        admission: Admission::new(
            name,
            Limits {
                prefill_per_token,
                ..Limits::new(slots * backends.len(), 8, Duration::from_secs(30))
            },
        ),
        endpoints,
    }
}

/// Models `a` (pool p1, falls back to `b`) and `b` (pool p2); both pools named in the file.
const ROUTES: &str = r#"
[[pool]]
name = "p1"
[[pool.endpoint]]
url = "http://p1"
kind = "ollama"
slots = 1
[[pool]]
name = "p2"
[[pool.endpoint]]
url = "http://p2"
kind = "ollama"
slots = 1
[[model]]
name = "a"
fallbacks = ["b"]
[[model.version]]
name = "v"
pool = "p1"
upstream = "a-up"
[[model]]
name = "b"
[[model.version]]
name = "v"
pool = "p2"
upstream = "b-up"
[[model]]
name = "a2"
fallbacks = ["a3"]
[[model.version]]
name = "v"
pool = "p1"
upstream = "a2-up"
[[model]]
name = "a3"
[[model.version]]
name = "v"
pool = "p1"
upstream = "a3-up"
"#;

fn timeouts(connect: u64, ttft: u64, idle: u64, total: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(connect),
        ttft: Duration::from_millis(ttft),
        idle: Duration::from_millis(idle),
        total: Duration::from_millis(total),
    }
}

struct Harness {
    topology: Arc<Topology>,
    metrics: Arc<SchedulerMetrics>,
}

impl Harness {
    fn new(pools: Vec<Pool>, retry_attempts: u32, timeouts: Timeouts) -> Self {
        let file = FileConfig::parse(ROUTES).unwrap();
        let routes = RouteTable::from_config(&file, timeouts);
        Self {
            topology: Arc::new(Topology::from_parts(routes, pools, retry_attempts)),
            metrics: Arc::new(SchedulerMetrics::new()),
        }
    }

    /// What the service does: validate, route, enter through the door, run. A refusal at the
    /// first door comes back as `Err` with the reason.
    fn start(
        &self,
        model: &str,
        stream: bool,
        deadline_ms: u64,
    ) -> Result<impl futures::Stream<Item = Result<ChatEvent, Status>> + use<>, String> {
        self.start_prompt(model, stream, deadline_ms, "hi")
    }

    /// [`Harness::start`] with `prompt` as the user's message.
    fn start_prompt(
        &self,
        model: &str,
        stream: bool,
        deadline_ms: u64,
        prompt: &str,
    ) -> Result<impl futures::Stream<Item = Result<ChatEvent, Status>> + use<>, String> {
        let request = ChatRequest {
            model: model.to_owned(),
            messages: vec![Message {
                role: "user".into(),
                content: prompt.into(),
                ..Default::default()
            }],
            stream,
            deadline_ms,
            ..Default::default()
        };
        let validated = validate(Work::Chat(request), Instant::now()).map_err(|e| e.to_string())?;
        let route = self
            .topology
            .routes
            .resolve(model, &validated.ask.tenant, 0)
            .map_err(|e| e.0)?;
        let pool = Arc::clone(self.topology.pool(&route.pool).unwrap());
        let span = tracing::Span::none();
        let limit = crate::generation::admit::first_token_limit(route.timeouts.total, deadline_ms);
        let door = admit(&pool, &validated.ask, limit, &self.metrics, &span)
            .map_err(|e| e.reason().as_str().to_owned())?;
        Ok(run(Job {
            topology: Arc::clone(&self.topology),
            route,
            door,
            context: Context {
                span,
                incoming: TraceContext::default(),
                metrics: Arc::clone(&self.metrics),
                ask: validated.ask,
                deadline: validated.deadline,
                deadline_ms,
                lease: Arc::new(crate::lease::Lease::sole()),
                received: Instant::now(),
            },
            request: validated.request,
        }))
    }

    fn admissions(&self) -> String {
        self.metrics.render(self.topology.pools.values())
    }
}

/// The events of a run (hand-overs left out), and the reason it failed with, if it did.
async fn outcome(
    events: impl futures::Stream<Item = Result<ChatEvent, Status>>,
) -> (Vec<Event>, Option<String>) {
    let (mut seen, failed) = full_outcome(events).await;
    seen.retain(|event| !matches!(event, Event::Dispatched(_)));
    (seen, failed.map(|(reason, _)| reason))
}

/// Every event of a run, and the reason and `x-llmgw-work` of its failure, if it failed.
async fn full_outcome(
    events: impl futures::Stream<Item = Result<ChatEvent, Status>>,
) -> (Vec<Event>, Option<(String, Option<String>)>) {
    let mut seen = Vec::new();
    let mut events = std::pin::pin!(events);
    while let Some(next) = events.next().await {
        match next {
            Ok(ChatEvent { event: Some(event) }) => seen.push(event),
            Ok(ChatEvent { event: None }) => {}
            Err(status) => {
                let metadata = status.metadata();
                let text = |key: &str| metadata.get(key).map(|v| v.to_str().unwrap().to_owned());
                let reason = text("x-llmgw-reason").unwrap();
                return (seen, Some((reason, text("x-llmgw-work"))));
            }
        }
    }
    (seen, None)
}

/// The backends the run announced hand-overs to, in order.
fn dispatched(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dispatched(d) => Some(d.backend.as_str()),
            _ => None,
        })
        .collect()
}

/// A prompt of about `tokens` tokens by the scheduler's own count (4 bytes a token).
fn prompt_of(tokens: usize) -> String {
    "abcd".repeat(tokens)
}

fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => Some(d.content.as_str()),
            _ => None,
        })
        .collect()
}

fn speaks(pieces: &'static [&'static str], finish: bool) -> Script {
    Script::Speaks {
        first_ms: 10,
        gap_ms: 10,
        pieces,
        finish,
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_into_a_pool_that_cannot_serve_fails_at_once_with_its_reason() {
    let failing = Scripted::new("e1", &[Script::Fails(500)]);
    let down = Scripted::new("e2", &[speaks(&["x"], true)]);
    let p2 = pool("p2", 1, &[Arc::clone(&down)]);
    p2.endpoints[0].set_probe(false, None);
    let harness = Harness::new(
        vec![pool("p1", 1, &[Arc::clone(&failing)]), p2],
        2,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let began = Instant::now();
    let (events, failed) = outcome(harness.start("a", true, 0).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("no_healthy_backend"));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(began.elapsed(), Duration::ZERO, "nothing waited");
    assert_eq!(failing.calls(), 1);
    assert_eq!(down.calls(), 0);
    // The refusal went through the same door as first admissions: counted for p2.
    let rendered = harness.admissions();
    assert!(
        rendered.lines().any(|l| l.contains("llmgw_admission_total")
            && l.contains("pool=\"p2\"")
            && l.contains("outcome=\"no_healthy_backend\"")),
        "{rendered}"
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_into_a_busy_pool_queues_there_and_says_so() {
    let failing = Scripted::new("e1", &[Script::Fails(500)]);
    let good = Scripted::new("e2", &[speaks(&["hel", "lo"], true)]);
    let harness = Harness::new(
        vec![
            pool("p1", 1, &[Arc::clone(&failing)]),
            pool("p2", 1, &[Arc::clone(&good)]),
        ],
        2,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let p2 = Arc::clone(harness.topology.pool("p2").unwrap());
    let Entry::Admitted(held) = p2
        .admission
        .enter(crate::admission::Ask {
            tenant: "other".into(),
            class: crate::admission::Class::Interactive,
            bytes: 1,
            cost: Default::default(),
            completion_capped: true,
            slo: None,
            slo_tpot: None,
        })
        .unwrap()
    else {
        panic!("p2 should have had a free slot")
    };
    let run = tokio::spawn(outcome(harness.start("a", true, 0).unwrap()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p2.admission.waiting(),
        1,
        "the fallback waits in p2's queue"
    );
    drop(held);
    let (events, failed) = run.await.unwrap();
    assert_eq!(failed, None);
    assert!(matches!(&events[0], Event::Queued(q) if q.pool == "p2" && q.position == 1));
    assert!(matches!(&events[1], Event::Started(s) if s.pool == "p2" && s.model == "b-up"));
    assert_eq!(text(&events), "hello");
    assert_eq!(p2.admission.running(), 0, "the slot ended with the stream");
    assert_eq!(harness.topology.pool("p1").unwrap().admission.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_in_the_same_pool_keeps_the_slot_and_tries_afresh() {
    let flaky = Scripted::new("e1", &[Script::Fails(500), speaks(&["ok"], true)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[Arc::clone(&flaky)]), pool("p2", 1, &[])],
        2,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let (events, failed) = outcome(harness.start("a2", true, 0).unwrap()).await;
    assert_eq!(failed, None);
    assert!(matches!(&events[0], Event::Started(s) if s.model == "a3-up"));
    assert_eq!(flaky.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_applies_unless_the_first_token_timeout_is_shorter() {
    for (connect, ttft, script, reason, after) in [
        (200, 5000, Script::NeverAnswers, "connect_timeout", 200),
        (1000, 300, Script::NeverAnswers, "ttft_timeout", 300),
        (200, 700, Script::Silent, "ttft_timeout", 700),
    ] {
        let backend = Scripted::new("e1", &[script]);
        let harness = Harness::new(
            vec![pool("p1", 1, &[backend]), pool("p2", 1, &[])],
            0,
            timeouts(connect, ttft, 1000, 60_000),
        );
        let began = Instant::now();
        let (_, failed) = outcome(harness.start("a3", true, 0).unwrap()).await;
        assert_eq!(failed.as_deref(), Some(reason));
        assert_eq!(began.elapsed(), Duration::from_millis(after), "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_every_timeout() {
    let backend = Scripted::new("e1", &[Script::Silent]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[backend]), pool("p2", 1, &[])],
        0,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let began = Instant::now();
    let (_, failed) = outcome(harness.start("a3", true, 250).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("deadline_exceeded"));
    assert_eq!(began.elapsed(), Duration::from_millis(250));

    // The model's total budget, when it is the shorter one.
    let backend = Scripted::new("e1", &[speaks(&["a", "b", "c"], false)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[backend]), pool("p2", 1, &[])],
        0,
        timeouts(1000, 5000, 60_000, 400),
    );
    let began = Instant::now();
    let (events, failed) = outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("total_timeout"));
    assert_eq!(text(&events), "abc");
    assert_eq!(began.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn retries_happen_before_the_first_token_only() {
    let refusing = Scripted::new("e1", &[Script::Fails(0)]);
    let good = Scripted::new("e2", &[speaks(&["fine"], true)]);
    let harness = Harness::new(
        vec![
            pool("p1", 1, &[Arc::clone(&refusing), Arc::clone(&good)]),
            pool("p2", 1, &[]),
        ],
        2,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let (events, failed) = outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(failed, None);
    assert!(matches!(&events[0], Event::Started(s) if s.backend == "e2"));
    assert_eq!((refusing.calls(), good.calls()), (1, 1));

    // A stall after the first token is an idle timeout, never a retry.
    let stalling = Scripted::new("e1", &[speaks(&["par", "tial"], false)]);
    let spare = Scripted::new("e2", &[speaks(&["never"], true)]);
    let harness = Harness::new(
        vec![
            pool("p1", 1, &[Arc::clone(&stalling), Arc::clone(&spare)]),
            pool("p2", 1, &[]),
        ],
        2,
        timeouts(1000, 5000, 300, 60_000),
    );
    let began = Instant::now();
    let (events, failed) = outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("idle_timeout"));
    assert_eq!(text(&events), "partial");
    assert_eq!(began.elapsed(), Duration::from_millis(10 + 10 + 300));
    assert_eq!(spare.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_is_shared_by_endpoints_and_fallbacks() {
    let first = Scripted::new("e1", &[Script::Fails(500)]);
    let second = Scripted::new("e2", &[Script::Fails(500)]);
    let harness = Harness::new(
        vec![
            pool("p1", 1, &[Arc::clone(&first), Arc::clone(&second)]),
            pool("p2", 1, &[]),
        ],
        0,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let (_, failed) = outcome(harness.start("a2", true, 0).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("backend_error"));
    assert_eq!(
        first.calls() + second.calls(),
        1,
        "no retry with attempts = 0"
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_streamed_answer_is_assembled_before_the_finish() {
    let backend = Scripted::new("e1", &[speaks(&["Hel", "lo", "!"], true)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[backend]), pool("p2", 1, &[])],
        0,
        timeouts(1000, 5000, 1000, 60_000),
    );
    let (events, failed) = outcome(harness.start("a3", false, 0).unwrap()).await;
    assert_eq!(failed, None);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(&events[0], Event::Started(_)));
    assert!(matches!(&events[1], Event::Delta(d) if d.content == "Hello!"));
    assert!(matches!(&events[2], Event::Finish(f) if f.reason == "stop"));
    assert!(matches!(&events[3], Event::Usage(u) if u.completion_tokens == 3));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_frees_its_slot_in_every_phase() {
    let backend = Scripted::new("e1", &[speaks(&["a", "b"], false)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[backend]), pool("p2", 1, &[])],
        0,
        timeouts(1000, 5000, 60_000, 600_000),
    );
    let p1 = Arc::clone(harness.topology.pool("p1").unwrap());
    let mut relaying = Box::pin(harness.start("a3", true, 0).unwrap());
    // Started, then both deltas: the stream now stalls inside the relay.
    for _ in 0..3 {
        relaying.next().await.unwrap().unwrap();
    }
    let mut waiting = Box::pin(harness.start("a3", true, 0).unwrap());
    assert!(matches!(
        waiting.next().await,
        Some(Ok(ChatEvent {
            event: Some(Event::Queued(_))
        }))
    ));
    assert_eq!((p1.admission.running(), p1.admission.waiting()), (1, 1));
    drop(waiting);
    assert_eq!(
        p1.admission.waiting(),
        0,
        "a dropped waiter leaves the queue"
    );
    drop(relaying);
    assert_eq!(p1.admission.running(), 0, "a dropped relay frees its slot");
    assert_eq!(p1.endpoints[0].outstanding(), 0);
}

#[tokio::test(start_paused = true)]
async fn hand_overs_are_announced_and_a_failure_says_whether_an_engine_worked() {
    // e1 refuses at once (no work), e2 takes the prompt and never answers (work).
    let refusing = Scripted::new("e1", &[Script::Fails(500)]);
    let silent = Scripted::new("e2", &[Script::Silent]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[refusing, silent]), pool("p2", 1, &[])],
        2,
        timeouts(1000, 500, 1000, 60_000),
    );
    let (events, failed) = full_outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(dispatched(&events), ["e1", "e2"]);
    assert_eq!(
        failed,
        Some(("ttft_timeout".to_owned(), Some("prompt".to_owned())))
    );

    // Only refusals at once: nobody worked, nothing to charge.
    let refusing = Scripted::new("e1", &[Script::Fails(500)]);
    let unreachable = Scripted::new("e2", &[Script::Fails(0)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[refusing, unreachable]), pool("p2", 1, &[])],
        2,
        timeouts(1000, 500, 1000, 60_000),
    );
    let (events, failed) = full_outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(dispatched(&events).len(), 2);
    assert_eq!(failed, Some(("backend_unavailable".to_owned(), None)));

    // Served: the hand-over comes before `started`.
    let good = Scripted::new("e1", &[speaks(&["ok"], true)]);
    let harness = Harness::new(
        vec![pool("p1", 1, &[good]), pool("p2", 1, &[])],
        0,
        timeouts(1000, 500, 1000, 60_000),
    );
    let (events, failed) = full_outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(failed, None);
    assert!(
        matches!(&events[0], Event::Dispatched(d) if d.backend == "e1" && d.prompt_tokens == 9)
    );
    assert!(matches!(&events[1], Event::Started(_)));
}

#[tokio::test(start_paused = true)]
async fn a_heavy_prompt_that_times_out_blames_no_engine_and_is_not_retried() {
    let silent = Scripted::new("e1", &[Script::Silent]);
    let spare = Scripted::new("e2", &[Script::Silent]);
    let harness = Harness::new(
        vec![
            pool_with("p1", 1, &[Arc::clone(&silent), Arc::clone(&spare)], 1, None),
            pool("p2", 1, &[]),
        ],
        2,
        timeouts(1000, 500, 1000, 60_000),
    );
    let began = Instant::now();
    let (_, failed) = outcome(
        harness
            .start_prompt("a3", true, 0, &prompt_of(3000))
            .unwrap(),
    )
    .await;
    assert_eq!(failed.as_deref(), Some("prompt_too_heavy"));
    assert_eq!(
        began.elapsed(),
        Duration::from_millis(500),
        "one attempt only"
    );
    assert_eq!((silent.calls(), spare.calls()), (1, 0));
    let p1 = harness.topology.pool("p1").unwrap();
    assert!(
        p1.endpoints
            .iter()
            .all(|e| e.breaker.state_name() == "closed"),
        "no breaker heard of it"
    );

    // The same silence on an ordinary prompt is the engine's fault: its breaker opens and
    // the request moves on.
    let (_, failed) = outcome(harness.start("a3", true, 0).unwrap()).await;
    assert_eq!(failed.as_deref(), Some("ttft_timeout"));
    assert_eq!(p1.endpoints[0].breaker.state_name(), "open");
}

#[tokio::test(start_paused = true)]
async fn the_first_token_budget_grows_with_the_prompt() {
    let slow_prefill = Script::Speaks {
        first_ms: 2500,
        gap_ms: 10,
        pieces: &["done"],
        finish: true,
    };
    // 1 ms per prompt token configured: 1 s + ~2 s of prefill allowed.
    let engine = Scripted::new("e1", std::slice::from_ref(&slow_prefill));
    let harness = Harness::new(
        vec![
            pool_with("p1", 1, &[engine], 1, Some(Duration::from_millis(1))),
            pool("p2", 1, &[]),
        ],
        0,
        timeouts(1000, 1000, 1000, 60_000),
    );
    let (events, failed) = outcome(
        harness
            .start_prompt("a3", true, 0, &prompt_of(2000))
            .unwrap(),
    )
    .await;
    assert_eq!(failed, None);
    assert_eq!(text(&events), "done");
    // The endpoint learned its prefill rate from it: (2.5 s − no base) ÷ 2,008 tokens.
    let p1 = harness.topology.pool("p1").unwrap();
    let learned = p1.endpoints[0].pace.timings().prefill_per_token.unwrap();
    assert!(learned > Duration::from_micros(1200), "{learned:?}");

    // Without the configured rate, the same prompt is too heavy for 1 s.
    let engine = Scripted::new("e1", &[slow_prefill]);
    let harness = Harness::new(
        vec![pool_with("p1", 1, &[engine], 1, None), pool("p2", 1, &[])],
        0,
        timeouts(1000, 1000, 1000, 60_000),
    );
    let (_, failed) = outcome(
        harness
            .start_prompt("a3", true, 0, &prompt_of(2000))
            .unwrap(),
    )
    .await;
    assert_eq!(failed.as_deref(), Some("prompt_too_heavy"));
}

#[tokio::test(start_paused = true)]
async fn a_prompt_too_heavy_for_the_learned_pace_is_refused_at_the_door() {
    let slow_prefill = Script::Speaks {
        first_ms: 2500,
        gap_ms: 10,
        pieces: &["done"],
        finish: true,
    };
    let engine = Scripted::new("e1", &[slow_prefill.clone(), slow_prefill]);
    let harness = Harness::new(
        vec![
            pool_with(
                "p1",
                1,
                &[Arc::clone(&engine)],
                1,
                Some(Duration::from_millis(1)),
            ),
            pool("p2", 1, &[]),
        ],
        0,
        timeouts(1000, 1000, 1000, 60_000),
    );
    // 2,000 tokens prefilled in 2.5 s teach the pool ~1.2 ms a token.
    let (_, failed) = outcome(
        harness
            .start_prompt("a3", true, 0, &prompt_of(2000))
            .unwrap(),
    )
    .await;
    assert_eq!(failed, None);
    assert_eq!(engine.calls(), 1);

    // 60,000 tokens at that pace take ~75 s, past the model's 60 s: refused before any wait
    // or engine call, instead of holding a slot to time out.
    let refused = harness
        .start_prompt("a3", true, 0, &prompt_of(60_000))
        .err();
    assert_eq!(
        refused.as_deref(),
        Some("prompt_too_heavy"),
        "refused before the stream opens"
    );
    assert_eq!(engine.calls(), 1, "the engine never saw it");
    // A prompt the pace allows still runs.
    let (_, failed) = outcome(
        harness
            .start_prompt("a3", true, 0, &prompt_of(2000))
            .unwrap(),
    )
    .await;
    assert_eq!(failed, None);
    assert_eq!(engine.calls(), 2);
}

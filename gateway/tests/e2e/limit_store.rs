//! The two limit stores — in memory and in a real `redis-server` — give the same decisions
//! for the same sequence: one conformance suite, run against both, so `store/limits.lua`
//! cannot drift from `ledger.rs`.

use std::sync::Arc;
use std::time::Duration;

use gateway::governance::ledger::{Decision, HELD_RETRY_MS, Limit, Limits, Remaining};
use gateway::governance::store::memory::MemoryStore;
use gateway::governance::store::redis::RedisStore;
use gateway::governance::store::{LimitStore, Reserve};

use crate::redis_server::RedisServer;
use crate::support::eventually_async;

fn ask(tenant: &str, id: &str, tokens: u64, limits: Limits, ttl_ms: u64) -> Reserve {
    Reserve {
        tenant: tenant.into(),
        id: id.to_owned(),
        tokens,
        limits,
        ttl_ms,
    }
}

fn granted(decision: Decision) -> Remaining {
    match decision {
        Decision::Granted(remaining) => remaining,
        refused @ Decision::Refused { .. } => panic!("expected a grant, got {refused:?}"),
    }
}

fn refused(decision: Decision) -> (Limit, Option<u64>) {
    match decision {
        Decision::Refused {
            limit,
            retry_after_ms,
            ..
        } => (limit, retry_after_ms),
        Decision::Granted(remaining) => panic!("expected a refusal, got {remaining:?}"),
    }
}

/// Every scenario, against one store. Tenants are fresh per scenario; the clock is real, so
/// assertions allow for the refill of a few milliseconds where a bucket refills fast.
async fn conformance(store: Arc<dyn LimitStore>, run: &str) {
    let tenant = |name: &str| format!("{run}-{name}");
    let minute = 60_000;

    // Requests: a bucket of 2, refilling one per 30 s.
    let rpm = Limits {
        rpm: Some(2),
        ..Limits::default()
    };
    let t = tenant("rpm");
    let first = granted(store.reserve(ask(&t, "a", 0, rpm, minute)).await.unwrap());
    assert_eq!(first.requests, Some(1));
    granted(store.reserve(ask(&t, "b", 0, rpm, minute)).await.unwrap());
    let (limit, retry) = refused(store.reserve(ask(&t, "c", 0, rpm, minute)).await.unwrap());
    assert_eq!(limit, Limit::Requests);
    let retry = retry.unwrap();
    assert!((29_000..=30_000).contains(&retry), "retry {retry}");

    // Tokens: reserve, refund at settlement, settle twice = once, debt.
    let tpm = Limits {
        tpm: Some(100_000),
        tokens_per_day: Some(1_000_000),
        ..Limits::default()
    };
    let t = tenant("tpm");
    let left = granted(
        store
            .reserve(ask(&t, "a", 80_000, tpm, minute))
            .await
            .unwrap(),
    );
    assert!((20_000..20_010).contains(&left.tokens.unwrap()), "{left:?}");
    assert_eq!(left.today, Some(920_000));
    let (limit, retry) = refused(
        store
            .reserve(ask(&t, "b", 30_000, tpm, minute))
            .await
            .unwrap(),
    );
    assert_eq!(limit, Limit::Tokens);
    assert!((5_900..=6_000).contains(&retry.unwrap()), "{retry:?}");
    store
        .settle(t.as_str().into(), "a".into(), 10_000, tpm)
        .await
        .unwrap();
    let after = store.peek(t.as_str().into(), tpm).await.unwrap();
    assert!(
        (90_000..90_050).contains(&after.tokens.unwrap()),
        "{after:?}"
    );
    assert_eq!(after.today, Some(990_000));
    store
        .settle(t.as_str().into(), "a".into(), 10_000, tpm)
        .await
        .unwrap();
    let again = store.peek(t.as_str().into(), tpm).await.unwrap();
    assert_eq!(again.today, Some(990_000), "settling twice changes nothing");
    granted(
        store
            .reserve(ask(&t, "c", 1_000, tpm, minute))
            .await
            .unwrap(),
    );
    store
        .settle(t.as_str().into(), "c".into(), 150_000, tpm)
        .await
        .unwrap();
    let debt = store.peek(t.as_str().into(), tpm).await.unwrap();
    assert!(debt.tokens.unwrap() < -50_000, "debt is carried: {debt:?}");
    assert_eq!(debt.today, Some(840_000));
    let (limit, _) = refused(store.reserve(ask(&t, "d", 1, tpm, minute)).await.unwrap());
    assert_eq!(limit, Limit::Tokens, "later requests wait for the debt");

    // A request larger than the limit itself can never pass.
    let (limit, retry) = refused(
        store
            .reserve(ask(&tenant("huge"), "a", 100_001, tpm, minute))
            .await
            .unwrap(),
    );
    assert_eq!((limit, retry), (Limit::Tokens, None));

    // Concurrency, idempotent reservation, expiry of an abandoned one.
    let one = Limits {
        max_concurrent: Some(1),
        ..Limits::default()
    };
    let t = tenant("conc");
    let left = granted(store.reserve(ask(&t, "a", 0, one, 300)).await.unwrap());
    assert_eq!(left.concurrent, Some(0));
    let again = granted(store.reserve(ask(&t, "a", 0, one, 300)).await.unwrap());
    assert_eq!(again.concurrent, Some(0), "the same id reserves once");
    let (limit, _) = refused(store.reserve(ask(&t, "b", 0, one, 300)).await.unwrap());
    assert_eq!(limit, Limit::Concurrency);
    let probe = Arc::clone(&store);
    let t2 = t.clone();
    eventually_async(
        "the abandoned reservation expires",
        Duration::from_secs(5),
        || {
            let (store, t) = (Arc::clone(&probe), t2.clone());
            async move {
                matches!(
                    store.reserve(ask(&t, "b", 0, one, 60_000)).await,
                    Ok(Decision::Granted(_))
                )
            }
        },
    )
    .await;

    // A spent daily budget refuses until the next UTC day.
    let day = Limits {
        tokens_per_day: Some(100),
        ..Limits::default()
    };
    let t = tenant("day");
    granted(store.reserve(ask(&t, "a", 100, day, minute)).await.unwrap());
    let (limit, retry) = refused(store.reserve(ask(&t, "b", 1, day, minute)).await.unwrap());
    assert_eq!(limit, Limit::Day);
    assert_eq!(
        retry,
        Some(HELD_RETRY_MS),
        "held by a request in flight: retry soon"
    );
    store
        .settle(t.as_str().into(), "a".into(), 100, day)
        .await
        .unwrap();
    let (limit, retry) = refused(store.reserve(ask(&t, "b", 1, day, minute)).await.unwrap());
    assert_eq!(limit, Limit::Day);
    let retry = retry.unwrap();
    assert!(
        retry > HELD_RETRY_MS && retry <= 86_400_000,
        "spent: retry when the day turns"
    );
}

#[tokio::test]
async fn memory_store_conformance() {
    conformance(Arc::new(MemoryStore::default()), "mem").await;
}

#[tokio::test]
async fn redis_store_conformance_and_cluster_safe_keys() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect_lazy(&redis.url(), "llmgw", Duration::from_secs(2)).unwrap();
    conformance(Arc::new(store), "rds").await;
    // Every key carries its tenant as a hash tag: one Cluster slot per tenant.
    let keys = redis.keys("*").await;
    assert!(!keys.is_empty());
    for key in keys {
        assert!(
            key.starts_with("llmgw:{rds-") && key.contains("}:"),
            "{key}"
        );
    }
}

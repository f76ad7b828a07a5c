//! Routing apply/rollback and pricing over HTTP on a real socket: the command routes merged with
//! the read routes of `projector`, a live runner tailing a real log (SQLite, and PostgreSQL for
//! the compare-and-set race).

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use services::providers::{Provider, SimulatedProvider, SimulatedSettings};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::Api;

const APPLY: &str = "/admin/studio/routing/apply";
const ROLLBACK: &str = "/admin/studio/routing/rollback";
const BINDINGS: &str = "/admin/studio/routing/bindings?effect_revision_id=fx1&stage=render";
const PRICES: &str = "/admin/studio/economics/prices";
const WINNER: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:sim:exp:cheap";
const OTHER: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:sim:exp:slow";
const OTHER_STAGE: &str = "er:fx1:wf:comfy:env:prod:stage:upscale:provider:sim:exp:cheap";
const OTHER_REVISION: &str = "er:fx2:wf:comfy:env:prod:stage:render:provider:sim:exp:cheap";
const RETIRED: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:sim:exp:old";
const THIRD: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:sim:exp:third";

fn sim_providers() -> BTreeMap<String, Arc<dyn Provider>> {
    let sim = SimulatedProvider::new(
        "sim",
        SimulatedSettings {
            latency_ms: 5.0,
            jitter_ms: 0.0,
            failure_rate: 0.0,
            cost_usd: 0.004,
            seed: 11,
        },
    )
    .with_time_scale(0.0);
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("sim".into(), Arc::new(sim));
    providers
}

async fn start(url_and_dir: Option<(String, tempfile::TempDir)>) -> Api {
    let api = match url_and_dir {
        Some((url, dir)) => Api::start_on(&url, dir, sim_providers()).await,
        None => Api::start(sim_providers()).await,
    };
    for v in [WINNER, OTHER, THIRD, OTHER_STAGE, OTHER_REVISION, RETIRED] {
        api.register(v, 0.004).await;
    }
    api.registry
        .retire(RETIRED, "superseded", "tests")
        .await
        .unwrap();
    api
}

fn apply(variant_id: &str, expected_version: i64, evidence: Option<&str>) -> Value {
    let mut body = json!({
        "effect_revision_id": "fx1",
        "stage": "render",
        "variant_id": variant_id,
        "expected_version": expected_version,
        "reason": "benchmark winner",
        "actor": "alice",
    });
    if let Some(run) = evidence {
        body["evidence"] = json!({"benchmark_run_id": run});
    }
    body
}

fn rollback(expected_version: i64) -> Value {
    json!({
        "effect_revision_id": "fx1",
        "stage": "render",
        "expected_version": expected_version,
        "reason": "p95 regression after the switch",
    })
}

fn message(err: &Value) -> &str {
    err["error"]["message"].as_str().unwrap()
}

/// A completed benchmark run of the two render variants, for evidence.
async fn benchmark_run(api: &Api) -> String {
    let (status, created) = api
        .post(
            "/admin/studio/benchmark-matrix-runs",
            &json!({"dataset": "iteration1-golden-v1", "variant_ids": [WINNER, OTHER],
                    "inputs": [{"input_id": "g1", "uri": "s3://golden/1.png"}], "repetitions": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let run_id = created["benchmark_run_id"].as_str().unwrap().to_owned();
    api.benchmarks.wait(&run_id).await.unwrap();
    run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_apply_rollback_leaves_version_three_on_the_winner_and_stale_or_empty_rollbacks_conflict(
) {
    let api = start(None).await;
    let run_id = benchmark_run(&api).await;

    // No binding yet: nothing to roll back.
    let (status, err) = api.post(ROLLBACK, &rollback(0)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "no_previous_binding");
    assert!(message(&err).contains("no binding yet"), "{err}");

    let (status, first) = api.post(APPLY, &apply(WINNER, 0, Some(&run_id))).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["binding"]["version"], 1);
    assert_eq!(first["binding"]["variant_id"], WINNER);
    assert_eq!(first["binding"]["previous_variant_id"], Value::Null);
    assert_eq!(
        first["binding"]["evidence"]["benchmark_run_id"],
        run_id.as_str()
    );
    assert!(first["position"].as_i64().unwrap() > 0);

    // One apply only: there is no previous variant.
    let (status, err) = api.post(ROLLBACK, &rollback(1)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "no_previous_binding");
    assert!(message(&err).contains("no previous variant"), "{err}");

    let (status, second) = api.post(APPLY, &apply(OTHER, 1, None)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["binding"]["version"], 2);
    assert_eq!(second["binding"]["previous_variant_id"], WINNER);
    assert_eq!(second["binding"]["rollback_target"], WINNER);

    let (status, back) = api.post(ROLLBACK, &rollback(2)).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["binding"]["version"], 3);
    assert_eq!(back["binding"]["variant_id"], WINNER);
    assert_eq!(back["binding"]["previous_variant_id"], OTHER);
    assert_eq!(back["binding"]["action"], "rolled_back");
    assert_eq!(back["binding"]["actor"], "operator");

    // A rollback decided on version 2 is stale now: 409 naming version 3.
    let (status, err) = api.post(ROLLBACK, &rollback(2)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "version_conflict");
    assert!(message(&err).contains("at version 3"), "{err}");
    assert!(message(&err).contains("expected_version 3"), "{err}");
    assert_eq!(err["error"]["details"][0]["current_version"], 3);
    // And so is an apply.
    let (status, err) = api.post(APPLY, &apply(OTHER, 1, None)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["details"][0]["current_version"], 3);
    // The stack is down to the first apply.
    let (status, err) = api.post(ROLLBACK, &rollback(3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "no_previous_binding");

    // The read side agrees, with the history.
    let bindings = api.get_current(BINDINGS).await;
    let list = bindings["bindings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{bindings}");
    assert_eq!(list[0]["variant_id"], WINNER);
    assert_eq!(list[0]["version"], 3);
    let history: Vec<(&str, &str)> = list[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap(),
                h["variant_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("applied", WINNER),
            ("applied", OTHER),
            ("rolled_back", WINNER)
        ]
    );
    assert_eq!(list[0]["history"][0]["benchmark_run_id"], run_id.as_str());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_variants_outside_the_scope_and_requests_without_expected_version() {
    let api = start(None).await;
    let head = api.log.head().await.unwrap();

    let mut missing = apply(WINNER, 0, None);
    missing.as_object_mut().unwrap().remove("expected_version");
    let (status, err) = api.post(APPLY, &missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "expected_version");
    let mut missing = rollback(0);
    missing.as_object_mut().unwrap().remove("expected_version");
    let (status, err) = api.post(ROLLBACK, &missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "expected_version");

    let (status, err) = api.post(APPLY, &apply(OTHER_STAGE, 0, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(message(&err).contains("stage \"upscale\""), "{err}");
    let (status, err) = api.post(APPLY, &apply(OTHER_REVISION, 0, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        message(&err).contains("effect_revision_id \"fx2\""),
        "{err}"
    );
    let (status, err) = api.post(APPLY, &apply(RETIRED, 0, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(message(&err).contains("retired"), "{err}");
    let unknown = "er:fx1:wf:comfy:env:prod:stage:render:provider:sim:exp:nope";
    let (status, err) = api.post(APPLY, &apply(unknown, 0, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(message(&err).contains("not registered"), "{err}");
    let no_run = eventlog::ids::new_benchmark_run_id();
    let (status, err) = api.post(APPLY, &apply(WINNER, 0, Some(&no_run))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["error"]["details"][0]["path"],
        "evidence.benchmark_run_id"
    );
    let (status, err) = api.post(APPLY, &apply(WINNER, -1, None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    assert_eq!(api.log.head().await.unwrap(), head, "nothing was stored");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_is_appended_and_the_money_hud_names_its_position() {
    let api = start(None).await;
    let run_id = benchmark_run(&api).await;

    let (status, first) = api
        .post(
            PRICES,
            &json!({"effect_revision_id": "fx1", "price_usd": 0.02}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = api
        .post(
            PRICES,
            &json!({"effect_revision_id": "fx1", "price_usd": 0.03}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["price_usd"], 0.03);
    assert_eq!(second["stream_version"], 2);
    let position = second["position"].as_i64().unwrap();
    assert!(position > first["position"].as_i64().unwrap());

    let prices = api.get_current(PRICES).await;
    let fx1 = prices["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["effect_revision_id"] == "fx1")
        .unwrap_or_else(|| panic!("no fx1 price in {prices}"));
    assert_eq!(
        (fx1["price_usd"].as_f64(), fx1["position"].as_i64()),
        (Some(0.03), Some(position))
    );

    let hud = api
        .get_current(&format!(
            "/admin/studio/economics/money-hud?benchmark_run_id={run_id}"
        ))
        .await;
    let rows = hud["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{hud}");
    for row in rows {
        assert_eq!(row["price_usd"], 0.03, "{row}");
        assert_eq!(row["price_position"], position, "{row}");
    }

    let head = api.log.head().await.unwrap();
    for (body, path) in [
        (
            json!({"effect_revision_id": "fx1", "price_usd": -1.0}),
            "price_usd",
        ),
        (
            json!({"effect_revision_id": "fx1", "price_usd": "cheap"}),
            "price_usd",
        ),
        (
            json!({"effect_revision_id": "fx 1", "price_usd": 1.0}),
            "effect_revision_id",
        ),
        (json!({"effect_revision_id": "fx1"}), "price_usd"),
    ] {
        let (status, err) = api.post(PRICES, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["details"][0]["path"], path, "{body}: {err}");
    }
    assert_eq!(api.log.head().await.unwrap(), head, "nothing was stored");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_applying_on_the_same_version_cannot_both_win_on_postgres() {
    let url = eventlog::testkit::postgres_database().await;
    let api = start(Some((url, tempfile::tempdir().unwrap()))).await;
    let mut version = 0;
    for round in 0..8 {
        // Between rounds the scope goes to a third variant, so both candidates differ from the
        // active one and only the version decides.
        if version > 0 {
            let (status, body) = api.post(APPLY, &apply(THIRD, version, None)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            version += 1;
        }
        let (a, b) = if round % 2 == 0 {
            (WINNER, OTHER)
        } else {
            (OTHER, WINNER)
        };
        let (body_a, body_b) = (apply(a, version, None), apply(b, version, None));
        let (x, y) = tokio::join!(api.post(APPLY, &body_a), api.post(APPLY, &body_b));
        let won: Vec<&Value> = [&x, &y]
            .into_iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {x:?} {y:?}");
        let (_, lost) = if x.0 == StatusCode::OK { &y } else { &x };
        assert_eq!(
            lost["error"]["code"], "version_conflict",
            "round {round}: {lost}"
        );
        assert_eq!(lost["error"]["details"][0]["current_version"], version + 1);
        version += 1;
        assert_eq!(won[0]["binding"]["version"], version);
    }
    let bindings = api.get_current(BINDINGS).await;
    assert_eq!(bindings["bindings"][0]["version"], version, "{bindings}");
    assert_eq!(
        bindings["bindings"][0]["history"].as_array().unwrap().len() as i64,
        version
    );
    api.stop().await;
}

//! Benchmark matrix runs over HTTP on a real socket: the benchmark command route merged with
//! the read routes of `projector`, a live runner tailing a real SQLite log, and three local
//! HTTP providers (slow and expensive, cheap and reliable, cheap and failing).

mod support;

use eventlog::catalogue::Outcome;
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::benchmarks::{
    artifact, BenchmarkMatrixService, BenchmarkOptions, DispatchesArtifact, RunOutcome,
};
use services::providers::Provider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::{seq_of, Api, Behaviour, ProviderServer};

const RUNS: &str = "/admin/studio/benchmark-matrix-runs";
const SLOW: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:slow-expensive:exp:e1";
const CHEAP: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:cheap-reliable:exp:e1";
const FAILING: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:cheap-failing:exp:e1";
const UNCONFIGURED: &str = "er:fx1:wf:comfy:env:prod:stage:render:provider:nowhere:exp:e1";

fn inputs(n: usize) -> Value {
    (1..=n)
        .map(|i| json!({"input_id": format!("golden-{i}"), "uri": format!("s3://golden/{i}.png")}))
        .collect()
}

fn run_body(variant_ids: &[&str], n_inputs: usize, repetitions: u32) -> Value {
    json!({
        "dataset": "iteration1-golden-v1",
        "variant_ids": variant_ids,
        "inputs": inputs(n_inputs),
        "repetitions": repetitions,
    })
}

/// The artifact's bytes, read from the `file://` URI an event recorded.
fn read_artifact(uri: &str) -> Vec<u8> {
    let path = reqwest::Url::parse(uri)
        .unwrap()
        .to_file_path()
        .unwrap_or_else(|()| panic!("{uri} is not a file URI"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn item<'a>(run: &'a Value, variant_id: &str) -> &'a Value {
    run["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["variant_id"] == variant_id)
        .unwrap_or_else(|| panic!("no item for {variant_id} in {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_run_dispatches_every_input_on_every_variant_and_records_matching_artifacts() {
    let slow = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 60,
        cost_usd: 0.05,
    })
    .await;
    let cheap = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 1,
        cost_usd: 0.004,
    })
    .await;
    let failing = ProviderServer::start(Behaviour::FailsOddSeqs { cost_usd: 0.003 }).await;
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("slow-expensive".into(), slow.provider("slow-expensive"));
    providers.insert("cheap-reliable".into(), cheap.provider("cheap-reliable"));
    providers.insert("cheap-failing".into(), failing.provider("cheap-failing"));
    let api = Api::start(providers).await;
    for (variant, cost) in [
        (SLOW, 0.05),
        (CHEAP, 0.004),
        (FAILING, 0.003),
        (UNCONFIGURED, 0.01),
    ] {
        api.register(variant, cost).await;
    }

    let (status, created) = api
        .post(RUNS, &run_body(&[SLOW, CHEAP, FAILING], 3, 2))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["status"], "running");
    let run_id = created["benchmark_run_id"].as_str().unwrap().to_owned();
    assert!(run_id.starts_with("bm_"), "{created}");
    assert_eq!(created["items"].as_array().unwrap().len(), 3);
    assert_eq!(created["items"][0]["planned_dispatches"], 6);
    assert_eq!(created["planned_dispatches"], 18);

    let outcome = api
        .benchmarks
        .wait(&run_id)
        .await
        .expect("the run executes here");
    assert_eq!(
        outcome,
        RunOutcome::Completed {
            dispatched: 18,
            ended_items: vec![]
        }
    );

    let run = api.get_current(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["dataset"], "iteration1-golden-v1");
    for (variant, succeeded, failed) in [(SLOW, 6, 0), (CHEAP, 6, 0), (FAILING, 3, 3)] {
        let item = item(&run, variant);
        assert_eq!(item["status"], "completed", "{item}");
        assert_eq!(item["dispatched"], 6, "{item}");
        assert_eq!(item["succeeded"], succeeded, "{item}");
        assert_eq!(item["failed"], failed, "{item}");
        let artifacts = item["artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 1, "{item}");
        let recorded = &artifacts[0];
        assert_eq!(recorded["artifact_type"], "benchmark_variant_dispatches");
        assert_eq!(recorded["dispatch_ids"].as_array().unwrap().len(), 6);

        // The file under the artifact directory is the one the event names, byte for byte.
        let uri = recorded["uri"].as_str().unwrap();
        let bytes = read_artifact(uri);
        assert_eq!(artifact::sha256_hex(&bytes), recorded["sha256"], "{uri}");
        let path = reqwest::Url::parse(uri).unwrap().to_file_path().unwrap();
        assert!(path.starts_with(&api.artifact_dir), "{}", path.display());

        let doc: DispatchesArtifact = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc.artifact_type, "benchmark_variant_dispatches");
        assert_eq!(
            (doc.benchmark_run_id.as_str(), doc.variant_id.as_str()),
            (run_id.as_str(), variant)
        );
        assert_eq!(doc.dispatches.len(), 6);
        assert!(doc.not_dispatched.is_empty());
        for d in &doc.dispatches {
            match d.outcome {
                Outcome::Succeeded => {
                    let output = d.output_uri.as_deref().unwrap();
                    assert_eq!(output, format!("s3://outputs/{}.png", d.dispatch_id));
                    assert!(d.cost_usd.is_some() && d.error.is_none(), "{d:?}");
                }
                _ => {
                    assert_eq!(variant, FAILING);
                    assert_eq!(d.seq % 2, 1, "only odd seqs fail: {d:?}");
                    assert!(d.error.as_deref().unwrap().contains("HTTP 503"), "{d:?}");
                    assert!(d.output_uri.is_none());
                }
            }
        }
        // Every input, each repeated twice.
        let mut per_input: BTreeMap<&str, u32> = BTreeMap::new();
        for d in &doc.dispatches {
            *per_input.entry(d.input_id.as_str()).or_default() += 1;
        }
        assert_eq!(per_input.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    }
    let slow_cost = item(&run, SLOW)["cost_usd_total"].as_f64().unwrap();
    assert!((slow_cost - 0.30).abs() < 1e-9, "{slow_cost}");
    // The failing provider's refusals have no known cost, so its total is unknown, not partial.
    assert_eq!(item(&run, FAILING)["cost_usd_total"], Value::Null);

    // Each provider got its six dispatches once, and never more than the bound at a time.
    for server in [&slow, &cheap, &failing] {
        let mut ids = server.dispatch_ids();
        assert_eq!(ids.len(), 6);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        assert!(
            server.max_in_flight() <= 2,
            "bound is 2, saw {}",
            server.max_in_flight()
        );
    }

    // The list shows the run too.
    let list = api.get_current(RUNS).await;
    assert!(list["benchmark_runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["benchmark_run_id"] == run_id.as_str()));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_run_refuses_what_cannot_run_and_stores_nothing() {
    let cheap = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 1,
        cost_usd: 0.004,
    })
    .await;
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("cheap-reliable".into(), cheap.provider("cheap-reliable"));
    let api = Api::start(providers).await;
    api.register(CHEAP, 0.004).await;
    api.register(UNCONFIGURED, 0.01).await;
    let head = api.log.head().await.unwrap();

    let (status, err) = api
        .post(RUNS, &run_body(&[CHEAP, UNCONFIGURED], 1, 1))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "provider_not_configured");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[providers.nowhere]"),
        "{err}"
    );
    assert_eq!(
        err["error"]["details"][0]["missing_entry"],
        "[providers.nowhere]"
    );

    let unknown = "er:fx1:wf:comfy:env:prod:stage:render:provider:cheap-reliable:exp:zz";
    let (status, err) = api.post(RUNS, &run_body(&[unknown], 1, 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{err}"
    );

    for (body, path) in [
        (run_body(&[CHEAP], 0, 1), "payload.inputs"),
        (run_body(&[CHEAP], 1, 0), "payload.repetitions"),
        (run_body(&[CHEAP], 1, 1000), "repetitions"),
        (run_body(&[CHEAP, CHEAP], 1, 1), "variant_ids[1]"),
        (run_body(&[], 1, 1), "payload.variant_ids"),
    ] {
        let (status, err) = api.post(RUNS, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        let paths: Vec<&str> = err["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["path"].as_str())
            .collect();
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with(path.trim_start_matches("payload."))),
            "{body}: expected {path} in {err}"
        );
    }
    let (status, err) = api
        .post(
            RUNS,
            &json!({"dataset": "d", "variant_ids": [CHEAP], "inputs": inputs(1)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "repetitions");

    assert_eq!(api.log.head().await.unwrap(), head, "nothing was stored");
    assert!(cheap.dispatch_ids().is_empty());
    api.stop().await;
}

/// A run left half-done: item 1 (on `hanging`) has dispatches 1 and 2 completed and 3 and 4
/// submitted but never answered; item 2 (on `cheap`) is complete. Made by the real service,
/// whose process then "dies": nothing it does from here on counts, because the hanging
/// provider never answers.
async fn half_done_run(api: &Api, hanging: &ProviderServer, cheap: &ProviderServer) -> String {
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("slow-expensive".into(), hanging.provider("slow-expensive"));
    providers.insert("cheap-reliable".into(), cheap.provider("cheap-reliable"));
    let doomed = BenchmarkMatrixService::new(
        api.log.clone(),
        providers,
        &api.artifact_dir,
        BenchmarkOptions::default(),
    )
    .unwrap();
    let request = serde_json::from_value(run_body(&[SLOW, CHEAP], 2, 2)).unwrap();
    let run_id = doomed.create(request).await.unwrap().run.benchmark_run_id;
    // Wait until the log shows the state described above.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = api.get_current(&format!("{RUNS}/{run_id}")).await;
        let (slow, cheap) = (item(&run, SLOW), item(&run, CHEAP));
        if slow["dispatched"] == 4 && slow["completed"] == 2 && cheap["status"] == "completed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got half done: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hanging.dispatch_ids().len(), 4);
    run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_finishes_a_half_done_run_sending_only_the_missing_dispatches() {
    let hanging = ProviderServer::start(Behaviour::HangsAfter {
        answered: 2,
        cost_usd: 0.05,
    })
    .await;
    let healthy = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 1,
        cost_usd: 0.05,
    })
    .await;
    let cheap = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 1,
        cost_usd: 0.004,
    })
    .await;
    let api = Api::start(BTreeMap::new()).await;
    api.register(SLOW, 0.05).await;
    api.register(CHEAP, 0.004).await;
    let run_id = half_done_run(&api, &hanging, &cheap).await;
    let cheap_artifact_before =
        item(&api.get_current(&format!("{RUNS}/{run_id}")).await, CHEAP)["artifacts"].clone();

    // The restarted process: same log, same artifact directory, the provider answering again.
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("slow-expensive".into(), healthy.provider("slow-expensive"));
    providers.insert("cheap-reliable".into(), cheap.provider("cheap-reliable"));
    let restarted = BenchmarkMatrixService::new(
        api.log.clone(),
        providers,
        &api.artifact_dir,
        BenchmarkOptions::default(),
    )
    .unwrap();
    let resumed = restarted.resume_unfinished().await.unwrap();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0].benchmark_run_id, run_id);
    assert_eq!(resumed[0].missing_dispatches, 2);
    let outcome = resumed[0].handle.clone().wait().await;
    assert_eq!(
        outcome,
        RunOutcome::Completed {
            dispatched: 2,
            ended_items: vec![]
        }
    );
    assert_eq!(restarted.wait(&run_id).await, Some(outcome));

    // Only the two unanswered dispatches were sent again, under their original ids.
    let mut resent: Vec<u64> = healthy.dispatch_ids().iter().map(|id| seq_of(id)).collect();
    resent.sort();
    assert_eq!(resent, [3, 4]);
    let first_time: Vec<String> = hanging.dispatch_ids();
    for id in healthy.dispatch_ids() {
        assert!(
            first_time.contains(&id),
            "{id} was not a dispatch of the first process"
        );
    }
    assert_eq!(
        cheap.dispatch_ids().len(),
        4,
        "the finished item was not run again"
    );

    let run = api.get_current(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    let slow = item(&run, SLOW);
    assert_eq!(slow["status"], "completed");
    // Re-sending a submitted dispatch did not count it twice.
    assert_eq!(
        (slow["dispatched"].as_u64(), slow["succeeded"].as_u64()),
        (Some(4), Some(4)),
        "{slow}"
    );
    let artifacts = slow["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1);
    let bytes = read_artifact(artifacts[0]["uri"].as_str().unwrap());
    assert_eq!(artifact::sha256_hex(&bytes), artifacts[0]["sha256"]);
    let doc: DispatchesArtifact = serde_json::from_slice(&bytes).unwrap();
    let seqs: Vec<u64> = doc.dispatches.iter().map(|d| d.seq).collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4],
        "the artifact lists the dispatches of both processes"
    );
    assert!(doc
        .dispatches
        .iter()
        .all(|d| d.outcome == Outcome::Succeeded));
    assert_eq!(item(&run, CHEAP)["artifacts"], cheap_artifact_before);

    // Nothing is left to resume.
    assert!(restarted.resume_unfinished().await.unwrap().is_empty());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_done_run_whose_provider_is_gone_is_ended_with_the_reason_in_its_artifact() {
    let hanging = ProviderServer::start(Behaviour::HangsAfter {
        answered: 2,
        cost_usd: 0.05,
    })
    .await;
    let cheap = ProviderServer::start(Behaviour::Reliable {
        delay_ms: 1,
        cost_usd: 0.004,
    })
    .await;
    let api = Api::start(BTreeMap::new()).await;
    api.register(SLOW, 0.05).await;
    api.register(CHEAP, 0.004).await;
    let run_id = half_done_run(&api, &hanging, &cheap).await;

    // Restarted without the [providers.slow-expensive] entry.
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("cheap-reliable".into(), cheap.provider("cheap-reliable"));
    let restarted = BenchmarkMatrixService::new(
        api.log.clone(),
        providers,
        &api.artifact_dir,
        BenchmarkOptions::default(),
    )
    .unwrap();
    let resumed = restarted.resume_unfinished().await.unwrap();
    assert_eq!(resumed.len(), 1);
    match resumed[0].handle.clone().wait().await {
        RunOutcome::Completed {
            dispatched,
            ended_items,
        } => {
            assert_eq!(dispatched, 0);
            assert_eq!(ended_items.len(), 1, "{ended_items:?}");
            assert_eq!(ended_items[0].variant_id, SLOW);
            assert_eq!(ended_items[0].not_dispatched, 2);
            assert!(ended_items[0].reason.contains("[providers.slow-expensive]"));
        }
        other => panic!("expected the run to be ended, got {other:?}"),
    }

    let run = api.get_current(&format!("{RUNS}/{run_id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    let slow = item(&run, SLOW);
    assert_eq!(slow["status"], "completed");
    assert_eq!(
        (slow["completed"].as_u64(), slow["succeeded"].as_u64()),
        (Some(2), Some(2))
    );
    let recorded = &slow["artifacts"][0];
    assert_eq!(recorded["dispatch_ids"].as_array().unwrap().len(), 2);
    let bytes = read_artifact(recorded["uri"].as_str().unwrap());
    assert_eq!(artifact::sha256_hex(&bytes), recorded["sha256"]);
    let doc: DispatchesArtifact = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc.planned_dispatches, 4);
    assert_eq!(doc.dispatches.len(), 2);
    let never: Vec<u64> = doc.not_dispatched.iter().map(|d| d.seq).collect();
    assert_eq!(never, [3, 4]);
    assert!(doc.not_dispatched[0]
        .reason
        .contains("[providers.slow-expensive]"));
    api.stop().await;
}

//! Poison events (DESIGN §6): an event a projection cannot apply is retried with backoff, then
//! recorded as a dead letter with the error, and the projection moves on; `replay` applies it
//! again once whatever it referred to exists.

#[macro_use]
mod common;

use common::{load_dispatch_id, registered, timestamp_ms, variant_id, Store, TestDb};
use eventlog::catalogue::{
    EventPayload, LoadDispatchCompleted, LoadDispatchSubmitted, Outcome, PriceSet, RunCreated,
    RunMode, RunStarted, Stage, StopConditions, VariantRetired,
};
use projector::checkpoint::dead_letters;
use projector::query::{self, Snapshot};
use projector::replay::{replay, ReplayOutcome};

on_both_stores!(
    a_dispatch_for_an_unknown_run_is_dead_lettered_and_the_projection_moves_on,
    a_replayed_dead_letter_applies_once_its_subject_exists,
    a_rebuild_dead_letters_a_poison_event_deep_in_a_transaction_and_matches_the_live_model,
);

fn run_created(run_id: &str) -> EventPayload {
    EventPayload::RunCreated(RunCreated {
        run_id: run_id.into(),
        name: "smoke".into(),
        effect_revision_id: "fx-1".into(),
        environment_id: "staging".into(),
        variant_id: variant_id("fx-1", "render", "sim-cheap"),
        input_fixture: "fixtures/small.json".into(),
        stages: vec![Stage {
            name: "warm".into(),
            duration_s: 10,
            target_rps: 1.0,
        }],
        stop_conditions: StopConditions::default(),
        estimated_cost_usd: None,
        approval_ref: None,
    })
}

fn completed(run_id: &str, seq: u64) -> EventPayload {
    EventPayload::LoadDispatchCompleted(LoadDispatchCompleted {
        run_id: run_id.into(),
        dispatch_id: load_dispatch_id(run_id, seq),
        outcome: Outcome::Succeeded,
        latency_ms: 120.0,
        service_time_ms: Some(100.0),
        cost_usd: Some(0.002),
        error: None,
        stage_index: None,
    })
}

async fn a_dispatch_for_an_unknown_run_is_dead_lettered_and_the_projection_moves_on(store: Store) {
    let t = TestDb::open(store).await;
    // Given a completion for a run that was never created, followed by valid events.
    let positions = t
        .append_payloads(&[
            registered(&variant_id("fx-1", "render", "sim-cheap"), Some(0.01)),
            completed("lt_ghost", 1),
            run_created("lt_real"),
            EventPayload::RunStarted(RunStarted {
                run_id: "lt_real".into(),
                mode: RunMode::Runner,
                executor: None,
            }),
            EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
                run_id: "lt_real".into(),
                dispatch_id: load_dispatch_id("lt_real", 1),
                seq: 1,
                stage_index: 0,
                variant_id: variant_id("fx-1", "render", "sim-cheap"),
                scheduled_at: timestamp_ms(5_000),
            }),
            completed("lt_real", 1),
            EventPayload::PriceSet(PriceSet {
                effect_revision_id: "fx-1".into(),
                price_usd: 0.05,
            }),
        ])
        .await;
    let poison = positions[1];

    // When the runner retries it twice and gives up on it.
    let mut runner = t.runner();
    t.drive(&mut runner).await;

    // Then every projection reached the head, and the later events were applied.
    let head = t.head().await;
    let checkpoints = t.checkpoints().await;
    assert_eq!(
        checkpoints.len(),
        projector::all_projections().len(),
        "{checkpoints:?}"
    );
    assert!(
        checkpoints.values().all(|p| *p == head),
        "not every projection reached {head}: {checkpoints:?}"
    );
    {
        let mut s = Snapshot::open(&t.db, &["load_tests"]).await.unwrap();
        let run = query::load_test_run(&mut s, "lt_real")
            .await
            .unwrap()
            .expect("the run after the poison event");
        assert_eq!(run["status"], "running");
        assert_eq!(run["totals"]["dispatched"], 1);
        assert_eq!(run["totals"]["succeeded"], 1);
        assert!(query::load_test_run(&mut s, "lt_ghost")
            .await
            .unwrap()
            .is_none());
    }
    {
        let mut s = Snapshot::open(&t.db, &["pricing"]).await.unwrap();
        assert_eq!(
            query::prices(&mut s).await.unwrap()["prices"][0]["price_usd"],
            0.05
        );
    }

    // The dead letter names the position, the event and the run.
    let dead = dead_letters(&t.db, Some("load_tests"), false)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].position, poison);
    assert_eq!(dead[0].event_type, "load_test.dispatch_completed");
    assert_eq!(dead[0].status, "dead");
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0].error.contains("lt_ghost"),
        "the error does not name the run: {}",
        dead[0].error
    );

    // Other projections were not held up or blamed.
    let all = dead_letters(&t.db, None, true).await.unwrap();
    assert!(all.iter().all(|d| d.projection == "load_tests"), "{all:#?}");

    // A new runner resumes after the dead letter instead of retrying it.
    runner.stop().await;
    let mut runner = t.runner();
    t.drive(&mut runner).await;
    assert_eq!(dead_letters(&t.db, None, true).await.unwrap().len(), 1);
    runner.stop().await;
    t.close().await;
}

/// A rebuild folds page by page (pages of 2,000 events on both stores) and commits every
/// `REBUILD_BATCH` events; a poison event several pages into a transaction rolls it back, and
/// every page since the last commit is folded again without the poison event. The rebuilt model
/// must equal the live one.
async fn a_rebuild_dead_letters_a_poison_event_deep_in_a_transaction_and_matches_the_live_model(
    store: Store,
) {
    const DISPATCHES: u64 = 8_000;
    let t = TestDb::open(store).await;
    let variant = variant_id("fx-1", "render", "sim-cheap");
    let EventPayload::RunCreated(mut created) = run_created("lt_real") else {
        unreachable!("run_created makes a RunCreated")
    };
    // A plan with room for every dispatch (one beyond it would be poison too).
    created.stages[0].target_rps = DISPATCHES as f64;
    let mut payloads = vec![
        registered(&variant, Some(0.01)),
        EventPayload::RunCreated(created),
        EventPayload::RunStarted(RunStarted {
            run_id: "lt_real".into(),
            mode: RunMode::Runner,
            executor: None,
        }),
    ];
    for seq in 1..=DISPATCHES {
        payloads.push(EventPayload::LoadDispatchSubmitted(LoadDispatchSubmitted {
            run_id: "lt_real".into(),
            dispatch_id: load_dispatch_id("lt_real", seq),
            seq,
            stage_index: 0,
            variant_id: variant.clone(),
            scheduled_at: timestamp_ms(seq as i64),
        }));
        payloads.push(completed("lt_real", seq));
    }
    // Past the first commit and in the third page of the second transaction.
    let poison_index = projector::rebuild::REBUILD_BATCH + 4_500;
    payloads.insert(poison_index, completed("lt_ghost", 1));
    let mut positions = Vec::new();
    for chunk in payloads.chunks(4_000) {
        positions.extend(t.append_payloads(chunk).await);
    }
    let poison = positions[poison_index];

    let mut runner = t.runner();
    t.drive(&mut runner).await;
    runner.stop().await;
    let answer = |t: &TestDb| {
        let db = t.db.clone();
        async move {
            let mut s = Snapshot::open(&db, &["load_tests"]).await.unwrap();
            query::load_test_run(&mut s, "lt_real").await.unwrap()
        }
    };
    let live = answer(&t).await.expect("the live run");
    assert_eq!(live["totals"]["succeeded"], DISPATCHES);

    let projections = projector::all_projections();
    let list: Vec<&dyn projector::Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let report = projector::rebuild::rebuild_all(&t.db, t.log.as_ref(), &list, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.events, t.head().await as u64);
    let rebuilt = answer(&t).await.expect("the rebuilt run");
    assert_eq!(rebuilt, live, "the rebuild differs from the live model");
    let dead = dead_letters(&t.db, None, true).await.unwrap();
    assert_eq!(
        dead.iter()
            .map(|d| (d.projection.as_str(), d.position))
            .collect::<Vec<_>>(),
        [("load_tests", poison)],
        "{dead:#?}"
    );
    t.close().await;
}

async fn a_replayed_dead_letter_applies_once_its_subject_exists(store: Store) {
    let t = TestDb::open(store).await;
    let late = variant_id("fx-2", "upscale", "sim-fast");
    let other = variant_id("fx-2", "upscale", "sim-best");
    // Given a retirement of a variant that is not registered yet.
    let positions = t
        .append_payloads(&[
            EventPayload::VariantRetired(VariantRetired {
                variant_id: late.clone(),
                reason: "too slow".into(),
            }),
            registered(&other, None),
        ])
        .await;
    let retired_at = positions[0];
    let mut runner = t.runner();
    t.drive(&mut runner).await;
    let dead = dead_letters(&t.db, Some("variants"), false).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| d.position).collect::<Vec<_>>(),
        [retired_at],
        "{dead:#?}"
    );
    assert!(dead[0].error.contains(&late), "{}", dead[0].error);

    // When the registration arrives and is applied, the variant is active: the retirement was
    // skipped.
    t.append_payloads(&[registered(&late, Some(0.02))]).await;
    t.drive(&mut runner).await;
    let status = |t: &TestDb, id: String| {
        let db = t.db.clone();
        async move {
            let mut s = Snapshot::open(&db, &["variants"]).await.unwrap();
            query::variant(&mut s, &id)
                .await
                .unwrap()
                .expect("registered variant")["status"]
                .clone()
        }
    };
    assert_eq!(status(&t, late.clone()).await, "active");

    // Then replaying the dead letter retires it, and the dead letter is marked replayed.
    assert_eq!(
        replay(&t.db, t.log.as_ref(), "variants", retired_at)
            .await
            .unwrap(),
        ReplayOutcome::Applied
    );
    assert_eq!(status(&t, late.clone()).await, "retired");
    assert!(dead_letters(&t.db, Some("variants"), false)
        .await
        .unwrap()
        .is_empty());
    let all = dead_letters(&t.db, Some("variants"), true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].position, all[0].status.as_str()),
        (retired_at, "replayed")
    );

    // And the live runner, which had the variant cached as active, sees the replay: a repeated
    // registration updates the details and keeps the status.
    t.append_payloads(&[registered(&late, Some(0.03))]).await;
    t.drive(&mut runner).await;
    let variant = {
        let mut s = Snapshot::open(&t.db, &["variants"]).await.unwrap();
        query::variant(&mut s, &late).await.unwrap().unwrap()
    };
    assert_eq!(variant["status"], "retired", "{variant}");
    assert_eq!(variant["unit_cost_usd"], 0.03);
    assert_eq!(variant["retired_reason"], "too slow");
    assert_eq!(variant["as_of_position"], t.head().await);
    runner.stop().await;
    t.close().await;
}

//! The v1 event catalogue (DESIGN §4): one typed payload per event type, its stream, its
//! severity and its semantic checks.
//!
//! Payload structs refuse unknown fields, so a typo in a producer is a 422, not a silently
//! dropped value. Optional fields beyond the catalogue (`stage_index`, `service_time_ms`, …)
//! are what the projections need and producers may leave out.

use crate::ids::{DispatchId, VariantId};
use crate::validation::{Checks, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How loudly an event should reach an operator (DESIGN §4, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Runner,
    Inline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    BenchmarkVariantDispatches,
}

// ---------------------------------------------------------------------------------------------
// load_test.*

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub duration_s: u64,
    pub target_rps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConditions {
    pub max_failure_rate: f64,
    pub sustained_s: u64,
}

/// Arrivals each stage plans: `duration_s × target_rps`, rounded to the nearest whole arrival.
/// Dispatch `seq` numbers (from 1) run across stages in order, so `stage_of_seq` tells which
/// stage a dispatch belongs to. The executor's planner and the projections share this rule.
pub fn planned_arrivals(stages: &[Stage]) -> Vec<u64> {
    stages
        .iter()
        .map(|s| (s.duration_s as f64 * s.target_rps).round() as u64)
        .collect()
}

/// The stage index of dispatch `seq` (1-based), or `None` past the last stage.
pub fn stage_of_seq(stages: &[Stage], seq: u64) -> Option<usize> {
    let mut end = 0u64;
    for (i, planned) in planned_arrivals(stages).into_iter().enumerate() {
        end += planned;
        if seq >= 1 && seq <= end {
            return Some(i);
        }
    }
    None
}

impl Default for StopConditions {
    /// The seed plan's stop condition: failure rate above 20% sustained for 10 minutes.
    fn default() -> Self {
        Self {
            max_failure_rate: 0.20,
            sustained_s: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCreated {
    pub run_id: String,
    pub name: String,
    pub effect_revision_id: String,
    pub environment_id: String,
    pub variant_id: String,
    pub input_fixture: String,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub stop_conditions: StopConditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    pub run_id: String,
    pub mode: RunMode,
    /// The process that executes the run, so a restarted instance can tell a run whose
    /// executor died from one still executing elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Executor>,
}

/// Where a run executes: the host name and process id of the engine's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    pub host: String,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerFallback {
    pub run_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageStarted {
    pub run_id: String,
    pub stage_index: u32,
    pub target_rps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadDispatchSubmitted {
    pub run_id: String,
    pub dispatch_id: String,
    pub seq: u64,
    pub stage_index: u32,
    pub variant_id: String,
    pub scheduled_at: String,
}

/// Schema version 2: v1 (the catalogue's shape) had no `service_time_ms`; the upcaster fills it
/// with `null` (unknown), never with a made-up number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadDispatchCompleted {
    pub run_id: String,
    pub dispatch_id: String,
    pub outcome: Outcome,
    pub latency_ms: f64,
    #[serde(deserialize_with = "required_nullable")]
    pub service_time_ms: Option<f64>,
    #[serde(deserialize_with = "required_nullable")]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_index: Option<u32>,
}

/// Arrivals the executor could not send at their planned instant: counted, never silently
/// delayed (an open-model load test that sends late hides the latency it should measure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalsMissed {
    pub run_id: String,
    pub stage_index: u32,
    pub count: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConditionBreached {
    pub run_id: String,
    pub failure_rate: f64,
    pub window_s: u64,
    /// Set when a critical alarm stopped the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_name: Option<String>,
    /// Set when the run's actual cost passed its estimate by more than the cost guard allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_overrun: Option<CostOverrun>,
}

/// The cost guard's figures when it stops a run: what was spent against what was estimated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostOverrun {
    pub actual_cost_usd: f64,
    pub estimated_cost_usd: f64,
    /// The run stops when actual > estimated × this factor.
    pub limit_factor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCancelled {
    pub run_id: String,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCompleted {
    pub run_id: String,
}

// ---------------------------------------------------------------------------------------------
// variant.*

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantRegistered {
    pub variant_id: String,
    pub effect_revision_id: String,
    pub workflow_id: String,
    pub environment_id: String,
    pub stage: String,
    pub provider: String,
    pub experiment_id: String,
    #[serde(default)]
    pub unit_cost_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantRetired {
    pub variant_id: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// benchmark.*

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkInput {
    pub input_id: String,
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkRunCreated {
    pub benchmark_run_id: String,
    pub dataset: String,
    pub variant_ids: Vec<String>,
    pub inputs: Vec<BenchmarkInput>,
    pub repetitions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkItemCreated {
    pub benchmark_run_id: String,
    pub item_id: String,
    pub variant_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkDispatchSubmitted {
    pub benchmark_run_id: String,
    pub item_id: String,
    pub input_id: String,
    pub dispatch_id: String,
    pub seq: u64,
    pub variant_id: String,
    pub scheduled_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkDispatchCompleted {
    pub benchmark_run_id: String,
    pub item_id: String,
    pub input_id: String,
    pub dispatch_id: String,
    pub outcome: Outcome,
    pub latency_ms: f64,
    #[serde(default)]
    pub service_time_ms: Option<f64>,
    #[serde(deserialize_with = "required_nullable")]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub output_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRecorded {
    pub benchmark_run_id: String,
    pub item_id: String,
    pub artifact_type: ArtifactType,
    pub uri: String,
    pub dispatch_ids: Vec<String>,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkItemCompleted {
    pub benchmark_run_id: String,
    pub item_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkRunCompleted {
    pub benchmark_run_id: String,
}

// ---------------------------------------------------------------------------------------------
// quality.*, pricing.*, routing.*, ops.*, action_log.*

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluator {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationCompleted {
    pub benchmark_run_id: String,
    pub evaluation_id: String,
    pub item_id: String,
    pub variant_id: String,
    pub dispatch_id: String,
    pub evaluator: Evaluator,
    pub score: f64,
    /// Per-criterion scores, each 0..1.
    pub criteria: BTreeMap<String, f64>,
    pub rationale: String,
    pub fallback: bool,
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationFailed {
    pub benchmark_run_id: String,
    pub evaluation_id: String,
    pub dispatch_id: String,
    pub reason: String,
    #[serde(default)]
    pub item_id: Option<String>,
    #[serde(default)]
    pub variant_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSet {
    pub effect_revision_id: String,
    pub price_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub benchmark_run_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingApplied {
    pub effect_revision_id: String,
    pub stage: String,
    pub variant_id: String,
    #[serde(deserialize_with = "required_nullable")]
    pub previous_variant_id: Option<String>,
    pub binding_version: u64,
    pub reason: String,
    pub actor: String,
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingRolledBack {
    pub effect_revision_id: String,
    pub stage: String,
    pub from_variant_id: String,
    pub to_variant_id: String,
    pub binding_version: u64,
    pub reason: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmStateChanged {
    pub alarm_name: String,
    pub old_state: AlarmState,
    pub new_state: AlarmState,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionLogAcknowledged {
    pub action_log_id: String,
    pub actor: String,
    #[serde(default)]
    pub note: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The closed catalogue.

macro_rules! catalogue {
    ($( $name:literal => $variant:ident($ty:ty) ),* $(,)?) => {
        /// A typed payload: one variant per event type of the catalogue.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventPayload {
            $( $variant($ty), )*
        }

        /// Every event type name, in catalogue order.
        pub const EVENT_TYPES: &[&str] = &[$($name),*];

        impl EventPayload {
            /// Parses a payload of the *current* schema version of `event_type`.
            pub fn parse(event_type: &str, payload: &Value) -> Result<Self, ValidationError> {
                match event_type {
                    $( $name => Ok(Self::$variant(deserialize(payload)?)), )*
                    other => Err(ValidationError::single(
                        "type",
                        format!("unknown event type {other:?}; known types: {}", EVENT_TYPES.join(", ")),
                    )),
                }
            }

            /// Parses a payload of the current schema version of `event_type` straight from its
            /// JSON text, without an intermediate `Value` (the log's rebuild scan). `None` for an
            /// unknown type or a text that is not a JSON object (which [`Self::parse`] refuses
            /// and a struct would accept as an array); an `Err` gives no field path, so callers
            /// that report errors take the `Value` path.
            pub fn parse_text(
                event_type: &str,
                text: &str,
            ) -> Option<Result<Self, serde_json::Error>> {
                if !text.trim_start().starts_with('{') {
                    return None;
                }
                match event_type {
                    $( $name => Some(serde_json::from_str::<$ty>(text).map(Self::$variant)), )*
                    _ => None,
                }
            }

            pub fn event_type(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $name, )*
                }
            }

            pub fn to_value(&self) -> Value {
                let value = match self {
                    $( Self::$variant(p) => serde_json::to_value(p), )*
                };
                value.expect("catalogue payloads always serialize")
            }
        }
    };
}

catalogue! {
    "load_test.run_created" => RunCreated(RunCreated),
    "load_test.run_started" => RunStarted(RunStarted),
    "load_test.runner_fallback" => RunnerFallback(RunnerFallback),
    "load_test.stage_started" => StageStarted(StageStarted),
    "load_test.dispatch_submitted" => LoadDispatchSubmitted(LoadDispatchSubmitted),
    "load_test.dispatch_completed" => LoadDispatchCompleted(LoadDispatchCompleted),
    "load_test.arrivals_missed" => ArrivalsMissed(ArrivalsMissed),
    "load_test.stop_condition_breached" => StopConditionBreached(StopConditionBreached),
    "load_test.run_cancelled" => RunCancelled(RunCancelled),
    "load_test.run_completed" => RunCompleted(RunCompleted),
    "variant.registered" => VariantRegistered(VariantRegistered),
    "variant.retired" => VariantRetired(VariantRetired),
    "benchmark.run_created" => BenchmarkRunCreated(BenchmarkRunCreated),
    "benchmark.item_created" => BenchmarkItemCreated(BenchmarkItemCreated),
    "benchmark.dispatch_submitted" => BenchmarkDispatchSubmitted(BenchmarkDispatchSubmitted),
    "benchmark.dispatch_completed" => BenchmarkDispatchCompleted(BenchmarkDispatchCompleted),
    "benchmark.artifact_recorded" => ArtifactRecorded(ArtifactRecorded),
    "benchmark.item_completed" => BenchmarkItemCompleted(BenchmarkItemCompleted),
    "benchmark.run_completed" => BenchmarkRunCompleted(BenchmarkRunCompleted),
    "quality.evaluation_completed" => EvaluationCompleted(EvaluationCompleted),
    "quality.evaluation_failed" => EvaluationFailed(EvaluationFailed),
    "pricing.price_set" => PriceSet(PriceSet),
    "routing.binding_applied" => BindingApplied(BindingApplied),
    "routing.binding_rolled_back" => BindingRolledBack(BindingRolledBack),
    "ops.alarm_state_changed" => AlarmStateChanged(AlarmStateChanged),
    "action_log.acknowledged" => ActionLogAcknowledged(ActionLogAcknowledged),
}

/// A field that must be present but may be `null` (unknown). Serde would otherwise take a missing
/// `Option` for `None`, and an unknown cost would be indistinguishable from a forgotten one.
fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

fn deserialize<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, ValidationError> {
    if !payload.is_object() {
        return Err(ValidationError::single(".", "must be a JSON object"));
    }
    // The fast path costs nothing extra on the way in; only a refusal pays for tracking the
    // path of the field at fault.
    T::deserialize(payload).map_err(
        |_| match serde_path_to_error::deserialize::<_, T>(payload) {
            Err(err) => {
                let path = err.path().to_string();
                ValidationError::single(path, err.into_inner().to_string())
            }
            Ok(_) => ValidationError::single(".", "payload does not match its schema"),
        },
    )
}

impl EventPayload {
    /// The stream an event of this payload belongs to (DESIGN §4).
    pub fn stream(&self) -> String {
        use EventPayload::*;
        match self {
            RunCreated(p) => load_test_stream(&p.run_id),
            RunStarted(p) => load_test_stream(&p.run_id),
            RunnerFallback(p) => load_test_stream(&p.run_id),
            StageStarted(p) => load_test_stream(&p.run_id),
            LoadDispatchSubmitted(p) => load_test_stream(&p.run_id),
            LoadDispatchCompleted(p) => load_test_stream(&p.run_id),
            ArrivalsMissed(p) => load_test_stream(&p.run_id),
            StopConditionBreached(p) => load_test_stream(&p.run_id),
            RunCancelled(p) => load_test_stream(&p.run_id),
            RunCompleted(p) => load_test_stream(&p.run_id),
            VariantRegistered(p) => format!("variant-{}", p.variant_id),
            VariantRetired(p) => format!("variant-{}", p.variant_id),
            BenchmarkRunCreated(p) => benchmark_stream(&p.benchmark_run_id),
            BenchmarkItemCreated(p) => benchmark_stream(&p.benchmark_run_id),
            BenchmarkDispatchSubmitted(p) => benchmark_stream(&p.benchmark_run_id),
            BenchmarkDispatchCompleted(p) => benchmark_stream(&p.benchmark_run_id),
            ArtifactRecorded(p) => benchmark_stream(&p.benchmark_run_id),
            BenchmarkItemCompleted(p) => benchmark_stream(&p.benchmark_run_id),
            BenchmarkRunCompleted(p) => benchmark_stream(&p.benchmark_run_id),
            EvaluationCompleted(p) => format!("quality-{}", p.benchmark_run_id),
            EvaluationFailed(p) => format!("quality-{}", p.benchmark_run_id),
            PriceSet(p) => format!("pricing-{}", p.effect_revision_id),
            BindingApplied(p) => routing_stream(&p.effect_revision_id, &p.stage),
            BindingRolledBack(p) => routing_stream(&p.effect_revision_id, &p.stage),
            AlarmStateChanged(p) => format!("ops-{}", p.alarm_name),
            ActionLogAcknowledged(p) => format!("action_log-{}", p.action_log_id),
        }
    }

    /// Severity per DESIGN §4: what the sinks turn into action logs.
    pub fn severity(&self) -> Severity {
        use EventPayload::*;
        match self {
            RunnerFallback(_) | RunCancelled(_) | EvaluationFailed(_) | ArrivalsMissed(_) => {
                Severity::Warn
            }
            BindingApplied(_) | BindingRolledBack(_) => Severity::Warn,
            EvaluationCompleted(p) if p.fallback => Severity::Warn,
            StopConditionBreached(_) => Severity::Critical,
            AlarmStateChanged(p) if p.new_state == AlarmState::Alarm => Severity::Critical,
            _ => Severity::Info,
        }
    }

    /// Semantic rules serde cannot express: signs, ranges, id grammars, cross-field agreement.
    pub fn check(&self) -> Result<(), ValidationError> {
        use EventPayload::*;
        let mut c = Checks::default();
        match self {
            RunCreated(p) => {
                c.segment("run_id", &p.run_id);
                c.not_blank("name", &p.name);
                c.segment("effect_revision_id", &p.effect_revision_id);
                c.segment("environment_id", &p.environment_id);
                c.variant_id("variant_id", &p.variant_id);
                c.not_blank("input_fixture", &p.input_fixture);
                if p.stages.is_empty() {
                    c.fail("stages", "must list at least one stage");
                }
                for (i, s) in p.stages.iter().enumerate() {
                    c.not_blank(&format!("stages[{i}].name"), &s.name);
                    if s.duration_s == 0 {
                        c.fail(format!("stages[{i}].duration_s"), "must be > 0");
                    }
                    c.positive(&format!("stages[{i}].target_rps"), s.target_rps);
                }
                c.fraction(
                    "stop_conditions.max_failure_rate",
                    p.stop_conditions.max_failure_rate,
                );
                if p.stop_conditions.sustained_s == 0 {
                    c.fail("stop_conditions.sustained_s", "must be > 0");
                }
                c.opt_non_negative("estimated_cost_usd", p.estimated_cost_usd);
            }
            RunStarted(p) => {
                c.segment("run_id", &p.run_id);
                if let Some(executor) = &p.executor {
                    c.not_blank("executor.host", &executor.host);
                }
            }
            RunnerFallback(p) => {
                c.segment("run_id", &p.run_id);
                c.not_blank("reason", &p.reason);
            }
            StageStarted(p) => {
                c.segment("run_id", &p.run_id);
                c.positive("target_rps", p.target_rps);
            }
            LoadDispatchSubmitted(p) => {
                c.segment("run_id", &p.run_id);
                check_dispatch_id(&mut c, &p.dispatch_id, &p.run_id, Some(p.seq));
                c.variant_id("variant_id", &p.variant_id);
                c.rfc3339("scheduled_at", &p.scheduled_at);
            }
            LoadDispatchCompleted(p) => {
                c.segment("run_id", &p.run_id);
                check_dispatch_id(&mut c, &p.dispatch_id, &p.run_id, None);
                c.non_negative("latency_ms", p.latency_ms);
                c.opt_non_negative("service_time_ms", p.service_time_ms);
                c.opt_non_negative("cost_usd", p.cost_usd);
            }
            ArrivalsMissed(p) => {
                c.segment("run_id", &p.run_id);
                if p.count == 0 {
                    c.fail("count", "must be ≥ 1");
                }
            }
            StopConditionBreached(p) => {
                c.segment("run_id", &p.run_id);
                c.fraction("failure_rate", p.failure_rate);
                if let Some(cost) = &p.cost_overrun {
                    c.non_negative("cost_overrun.actual_cost_usd", cost.actual_cost_usd);
                    c.non_negative("cost_overrun.estimated_cost_usd", cost.estimated_cost_usd);
                    c.non_negative("cost_overrun.limit_factor", cost.limit_factor);
                }
            }
            RunCancelled(p) => {
                c.segment("run_id", &p.run_id);
                c.not_blank("actor", &p.actor);
            }
            RunCompleted(p) => c.segment("run_id", &p.run_id),
            VariantRegistered(p) => {
                if let Some(id) = c.variant_id("variant_id", &p.variant_id) {
                    for (field, given, parsed) in [
                        (
                            "effect_revision_id",
                            &p.effect_revision_id,
                            &id.effect_revision_id,
                        ),
                        ("workflow_id", &p.workflow_id, &id.workflow_id),
                        ("environment_id", &p.environment_id, &id.environment_id),
                        ("stage", &p.stage, &id.stage),
                        ("provider", &p.provider, &id.provider),
                        ("experiment_id", &p.experiment_id, &id.experiment_id),
                    ] {
                        if given != parsed {
                            c.fail(
                                field,
                                format!("is {given:?} but the variant id says {parsed:?}"),
                            );
                        }
                    }
                }
                c.opt_non_negative("unit_cost_usd", p.unit_cost_usd);
            }
            VariantRetired(p) => {
                c.variant_id("variant_id", &p.variant_id);
            }
            BenchmarkRunCreated(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("dataset", &p.dataset);
                if p.variant_ids.is_empty() {
                    c.fail("variant_ids", "must list at least one variant");
                }
                for (i, v) in p.variant_ids.iter().enumerate() {
                    c.variant_id(&format!("variant_ids[{i}]"), v);
                }
                if p.inputs.is_empty() {
                    c.fail("inputs", "must list at least one input");
                }
                for (i, input) in p.inputs.iter().enumerate() {
                    c.segment(&format!("inputs[{i}].input_id"), &input.input_id);
                    c.not_blank(&format!("inputs[{i}].uri"), &input.uri);
                }
                if p.repetitions == 0 {
                    c.fail("repetitions", "must be ≥ 1");
                }
            }
            BenchmarkItemCreated(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("item_id", &p.item_id);
                c.variant_id("variant_id", &p.variant_id);
            }
            BenchmarkDispatchSubmitted(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("item_id", &p.item_id);
                c.segment("input_id", &p.input_id);
                c.segment("dispatch_id", &p.dispatch_id);
                c.variant_id("variant_id", &p.variant_id);
                c.rfc3339("scheduled_at", &p.scheduled_at);
            }
            BenchmarkDispatchCompleted(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("item_id", &p.item_id);
                c.segment("input_id", &p.input_id);
                c.segment("dispatch_id", &p.dispatch_id);
                c.non_negative("latency_ms", p.latency_ms);
                c.opt_non_negative("service_time_ms", p.service_time_ms);
                c.opt_non_negative("cost_usd", p.cost_usd);
            }
            ArtifactRecorded(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("item_id", &p.item_id);
                c.not_blank("uri", &p.uri);
                for (i, d) in p.dispatch_ids.iter().enumerate() {
                    c.segment(&format!("dispatch_ids[{i}]"), d);
                }
                if p.sha256.len() != 64
                    || !p
                        .sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    c.fail("sha256", "must be 64 lowercase hex digits");
                }
            }
            BenchmarkItemCompleted(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("item_id", &p.item_id);
            }
            BenchmarkRunCompleted(p) => c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id),
            EvaluationCompleted(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("evaluation_id", &p.evaluation_id);
                c.segment("item_id", &p.item_id);
                c.variant_id("variant_id", &p.variant_id);
                c.segment("dispatch_id", &p.dispatch_id);
                c.not_blank("evaluator.provider", &p.evaluator.provider);
                c.fraction("score", p.score);
                for (name, score) in &p.criteria {
                    c.fraction(&format!("criteria.{name}"), *score);
                }
                if p.fallback
                    && p.fallback_reason
                        .as_deref()
                        .is_none_or(|r| r.trim().is_empty())
                {
                    c.fail("fallback_reason", "is required when fallback is true");
                }
            }
            EvaluationFailed(p) => {
                c.benchmark_run_id("benchmark_run_id", &p.benchmark_run_id);
                c.segment("evaluation_id", &p.evaluation_id);
                c.segment("dispatch_id", &p.dispatch_id);
                c.not_blank("reason", &p.reason);
                if let Some(v) = &p.variant_id {
                    c.variant_id("variant_id", v);
                }
            }
            PriceSet(p) => {
                c.segment("effect_revision_id", &p.effect_revision_id);
                c.non_negative("price_usd", p.price_usd);
            }
            BindingApplied(p) => {
                c.segment("effect_revision_id", &p.effect_revision_id);
                c.segment("stage", &p.stage);
                c.variant_id("variant_id", &p.variant_id);
                if let Some(prev) = &p.previous_variant_id {
                    c.variant_id("previous_variant_id", prev);
                }
                if p.binding_version == 0 {
                    c.fail("binding_version", "must be ≥ 1");
                }
                c.not_blank("actor", &p.actor);
                if let Some(e) = &p.evidence {
                    c.benchmark_run_id("evidence.benchmark_run_id", &e.benchmark_run_id);
                }
            }
            BindingRolledBack(p) => {
                c.segment("effect_revision_id", &p.effect_revision_id);
                c.segment("stage", &p.stage);
                c.variant_id("from_variant_id", &p.from_variant_id);
                c.variant_id("to_variant_id", &p.to_variant_id);
                if p.binding_version == 0 {
                    c.fail("binding_version", "must be ≥ 1");
                }
                c.not_blank("actor", &p.actor);
            }
            AlarmStateChanged(p) => {
                c.not_blank("alarm_name", &p.alarm_name);
                if p.alarm_name.len() > 255 {
                    c.fail("alarm_name", "must be at most 255 characters");
                }
            }
            ActionLogAcknowledged(p) => {
                c.segment("action_log_id", &p.action_log_id);
                c.not_blank("actor", &p.actor);
            }
        }
        c.finish()
    }
}

fn check_dispatch_id(c: &mut Checks, dispatch_id: &str, run_id: &str, seq: Option<u64>) {
    match DispatchId::parse(dispatch_id) {
        Err(reason) => c.fail("dispatch_id", reason),
        Ok(id) if id.run_id != run_id => c.fail(
            "dispatch_id",
            format!(
                "names run {:?} but the event is for run {run_id:?}",
                id.run_id
            ),
        ),
        Ok(id) if seq.is_some_and(|s| s != id.seq) => c.fail(
            "dispatch_id",
            format!(
                "carries sequence {} but seq is {}",
                id.seq,
                seq.unwrap_or(0)
            ),
        ),
        Ok(_) => {}
    }
}

pub fn load_test_stream(run_id: &str) -> String {
    format!("load_test_run-{run_id}")
}

pub fn benchmark_stream(benchmark_run_id: &str) -> String {
    format!("benchmark_run-{benchmark_run_id}")
}

pub fn routing_stream(effect_revision_id: &str, stage: &str) -> String {
    format!("routing-{effect_revision_id}:{stage}")
}

/// Returns the variant id's parts as they would appear in a `variant.registered` payload.
pub fn variant_registered(variant_id: &VariantId, unit_cost_usd: Option<f64>) -> VariantRegistered {
    VariantRegistered {
        variant_id: variant_id.to_string(),
        effect_revision_id: variant_id.effect_revision_id.clone(),
        workflow_id: variant_id.workflow_id.clone(),
        environment_id: variant_id.environment_id.clone(),
        stage: variant_id.stage.clone(),
        provider: variant_id.provider.clone(),
        experiment_id: variant_id.experiment_id.clone(),
        unit_cost_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_event_type_is_parsed_by_its_own_variant() {
        assert_eq!(EVENT_TYPES.len(), 26);
        let payload = json!({"run_id": "lt_1"});
        let parsed = EventPayload::parse("load_test.run_completed", &payload).unwrap();
        assert_eq!(parsed.event_type(), "load_test.run_completed");
        assert_eq!(parsed.stream(), "load_test_run-lt_1");
    }

    #[test]
    fn unknown_type_is_refused_with_the_known_list() {
        let err = EventPayload::parse("load_test.exploded", &json!({})).unwrap_err();
        assert_eq!(err.violations[0].path, "type");
        assert!(err.violations[0].reason.contains("load_test.run_created"));
    }

    #[test]
    fn extra_and_missing_fields_are_refused_with_their_path() {
        let err = EventPayload::parse(
            "load_test.run_completed",
            &json!({"run_id": "a", "extra": 1}),
        )
        .unwrap_err();
        assert!(
            err.violations[0].reason.contains("unknown field `extra`"),
            "{err}"
        );
        let err = EventPayload::parse(
            "load_test.run_cancelled",
            &json!({"run_id": "a", "actor": "x"}),
        )
        .unwrap_err();
        assert!(
            err.violations[0].reason.contains("missing field `reason`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_and_unknown_enum_values_name_the_nested_field() {
        let err = EventPayload::parse(
            "load_test.run_created",
            &json!({"run_id": "lt_1", "name": "n", "effect_revision_id": "fx", "environment_id": "stg",
                    "variant_id": "v", "input_fixture": "f",
                    "stages": [{"name": "warm", "duration_s": 10, "target_rps": "fast"}]}),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].path, "stages[0].target_rps");
        let err = EventPayload::parse(
            "load_test.run_started",
            &json!({"run_id": "lt_1", "mode": "batch"}),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].path, "mode");
        assert!(err.violations[0].reason.contains("unknown variant `batch`"));
        let err = EventPayload::parse(
            "ops.alarm_state_changed",
            &json!({"alarm_name": "a", "old_state": "OK", "new_state": "RED", "reason": "r"}),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].path, "new_state");
    }

    #[test]
    fn negative_latency_and_cost_are_refused() {
        let dispatch_id = DispatchId::new("lt_1", 3).to_string();
        let payload = EventPayload::parse(
            "load_test.dispatch_completed",
            &json!({"run_id": "lt_1", "dispatch_id": dispatch_id, "outcome": "succeeded",
                    "latency_ms": -5.0, "service_time_ms": null, "cost_usd": -0.01}),
        )
        .unwrap();
        let err = payload.check().unwrap_err();
        let paths: Vec<_> = err.violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["latency_ms", "cost_usd"]);
    }

    #[test]
    fn dispatch_id_must_belong_to_the_run_and_carry_its_seq() {
        let dispatch_id = DispatchId::new("lt_other", 3).to_string();
        let payload = EventPayload::parse(
            "load_test.dispatch_submitted",
            &json!({"run_id": "lt_1", "dispatch_id": dispatch_id, "seq": 4, "stage_index": 0,
                    "variant_id": "er:a:wf:b:env:c:stage:d:provider:e:exp:f",
                    "scheduled_at": "2026-11-24T10:00:00Z"}),
        )
        .unwrap();
        let err = payload.check().unwrap_err();
        assert!(
            err.violations[0].reason.contains("names run \"lt_other\""),
            "{err}"
        );
    }

    #[test]
    fn variant_registration_parts_must_agree_with_the_id() {
        let id = VariantId::parse("er:a:wf:b:env:c:stage:d:provider:e:exp:f").unwrap();
        let mut registered = variant_registered(&id, Some(0.01));
        assert!(EventPayload::VariantRegistered(registered.clone())
            .check()
            .is_ok());
        registered.provider = "other".into();
        let err = EventPayload::VariantRegistered(registered)
            .check()
            .unwrap_err();
        assert_eq!(err.violations[0].path, "provider");
    }

    #[test]
    fn dispatch_sequence_numbers_map_to_stages_by_planned_arrivals() {
        let stage = |d, r| Stage {
            name: "s".into(),
            duration_s: d,
            target_rps: r,
        };
        let stages = [stage(10, 2.5), stage(3, 0.5)];
        assert_eq!(planned_arrivals(&stages), [25, 2]);
        assert_eq!(stage_of_seq(&stages, 1), Some(0));
        assert_eq!(stage_of_seq(&stages, 25), Some(0));
        assert_eq!(stage_of_seq(&stages, 26), Some(1));
        assert_eq!(stage_of_seq(&stages, 27), Some(1));
        assert_eq!(stage_of_seq(&stages, 28), None);
        assert_eq!(stage_of_seq(&stages, 0), None);
    }

    #[test]
    fn severities_follow_the_catalogue() {
        let alarm = |state| {
            EventPayload::AlarmStateChanged(AlarmStateChanged {
                alarm_name: "a".into(),
                old_state: AlarmState::Ok,
                new_state: state,
                reason: "r".into(),
            })
        };
        assert_eq!(alarm(AlarmState::Alarm).severity(), Severity::Critical);
        assert_eq!(alarm(AlarmState::Ok).severity(), Severity::Info);
        let cancelled = EventPayload::RunCancelled(RunCancelled {
            run_id: "lt_1".into(),
            reason: "r".into(),
            actor: "op".into(),
        });
        assert_eq!(cancelled.severity(), Severity::Warn);
    }
}

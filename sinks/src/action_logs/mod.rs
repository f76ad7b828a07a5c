//! Action logs: severity rules → kinds → operator instructions rendered from
//! `templates/<kind>.hbs`, grouped per kind and subject, written exactly once per event.

mod health;
mod query;
mod rules;
mod samples;
mod sink;
mod store;
mod templates;

pub use health::{DeadLetterRow, HealthFinding, StallWatch};
pub use query::{
    acknowledge, get_action_log, list_action_logs, AckError, Acknowledged, ActionLog,
    ActionLogFilter, ActionLogPage, DEFAULT_ACTOR, DEFAULT_LIMIT, MAX_LIMIT,
};
pub use rules::{classify, run_id_in_alarm_name, wants, Finding, Kind};
pub use samples::{recorded, sample_finding, sample_payload, sample_run};
pub use sink::{ActionLogConfig, ActionLogSink, ACTION_LOG_SINK};
pub use store::{action_log_id, fold, joins, Fold, FoldError, Folded, Grouping};
pub use templates::{TemplateError, Templates, EMBEDDED};

/// Start-up check: every kind has a template, and each renders against a real example of its
/// kind (built through the catalogue). The lead calls it before any task starts.
pub fn check_templates() -> Result<Templates, TemplateError> {
    let templates = Templates::embedded()?;
    check(&templates)?;
    Ok(templates)
}

/// Renders every kind's example with `templates`.
pub fn check(templates: &Templates) -> Result<(), TemplateError> {
    for kind in Kind::ALL {
        let finding = sample_finding(*kind);
        let mut context = finding.context.clone();
        context["action_log_id"] = "al_check".into();
        context["kind"] = kind.as_str().into();
        context["severity"] = finding.severity.as_str().into();
        context["subject"] = finding.subject.clone().into();
        let text = templates.render(*kind, &context)?;
        if text.is_empty() {
            return Err(TemplateError::Render {
                kind: kind.as_str(),
                error: "renders to nothing".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn context_of(kind: Kind) -> Value {
        let finding = sample_finding(kind);
        let mut context = finding.context.clone();
        context["action_log_id"] = "al_test".into();
        context["kind"] = kind.as_str().into();
        context["severity"] = finding.severity.as_str().into();
        context["subject"] = finding.subject.into();
        context
    }

    fn render(kind: Kind) -> String {
        check_templates()
            .expect("templates check")
            .render(kind, &context_of(kind))
            .unwrap()
    }

    #[test]
    fn every_kind_has_a_template_that_renders_its_real_example() {
        let templates = check_templates().expect("every template renders");
        for kind in Kind::ALL {
            let text = templates.render(*kind, &context_of(*kind)).unwrap();
            assert!(
                text.contains("al_test"),
                "{}: names the entry to acknowledge\n{text}",
                kind.as_str()
            );
            assert!(
                !text.contains("{{"),
                "{}: unrendered handlebars\n{text}",
                kind.as_str()
            );
        }
    }

    #[test]
    fn the_templates_on_disk_are_the_ones_compiled_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let from_dir = Templates::from_dir(&dir).expect("templates directory");
        check(&from_dir).unwrap();
        for (kind, source) in EMBEDDED {
            let on_disk = std::fs::read_to_string(dir.join(format!("{kind}.hbs"))).unwrap();
            assert_eq!(&on_disk, source);
        }
    }

    #[test]
    fn a_template_naming_a_missing_field_fails_in_strict_mode() {
        let sources = EMBEDDED.iter().map(|(k, s)| {
            let s = if *k == "runner_fallback" {
                "Run {{run_id}} fell back: {{reson}}".to_string()
            } else {
                s.to_string()
            };
            (k.to_string(), s)
        });
        let templates = Templates::from_sources(sources).unwrap();
        let err = check(&templates).unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render { kind: "runner_fallback", error } if error.contains("reson")),
            "{err}"
        );
    }

    #[test]
    fn a_kind_without_a_template_is_refused() {
        let sources = EMBEDDED
            .iter()
            .filter(|(k, _)| *k != "alarm")
            .map(|(k, s)| (k.to_string(), s.to_string()));
        let err = Templates::from_sources(sources).unwrap_err();
        assert!(
            matches!(err, TemplateError::Missing { kind: "alarm" }),
            "{err}"
        );
    }

    #[test]
    fn a_runner_fallback_says_how_to_cancel_that_run() {
        let text = render(Kind::RunnerFallback);
        assert!(text.contains(
            "curl -X POST -H \"Authorization: Bearer $STUDIO_ADMIN_TOKEN\" -H \"Content-Type: application/json\" \
             $STUDIO_URL/admin/studio/load-test-runs/lt_0193a1b2c3d4e5f60718293a4b5c6d7e/cancel -d '{\"reason\":"
        ), "{text}");
        assert!(
            text.contains("\"portrait-soak\""),
            "quotes are not HTML-escaped: {text}"
        );
    }

    #[test]
    fn a_binding_change_gives_the_rollback_with_its_expected_version() {
        let text = render(Kind::RoutingBindingApplied);
        assert!(text.contains(
            "$STUDIO_URL/admin/studio/routing/rollback -d '{\"effect_revision_id\":\"fx_portrait\",\"stage\":\"render\",\"expected_version\":3,"
        ), "{text}");
        let text = render(Kind::RoutingBindingRolledBack);
        assert!(text.contains("\"expected_version\":4"), "{text}");
    }

    #[test]
    fn quality_problems_say_how_to_rerun_the_judge() {
        for kind in [Kind::QualityFallback, Kind::QualityEvaluationFailed] {
            let text = render(kind);
            assert!(text.contains(
                "$STUDIO_URL/admin/studio/quality-evaluations -d '{\"benchmark_run_id\":\"bm_0193a1b2-c3d4-7e5f-8071-8293a4b5c6d7\"}'"
            ), "{text}");
        }
    }

    #[test]
    fn dead_letters_say_how_to_replay_them() {
        let text = render(Kind::SinkDeadLetter);
        assert!(
            text.contains("studio dead-letters replay --sink cloudwatch_metrics --position 1234"),
            "{text}"
        );
        let text = render(Kind::ProjectionDeadLetter);
        assert!(
            text.contains("studio dead-letters replay --projection quality --position 1234"),
            "{text}"
        );
        let text = render(Kind::ProjectionStalled);
        assert!(
            text.contains("stuck at position 1200") && text.contains("250 event(s) behind"),
            "{text}"
        );
    }

    #[test]
    fn an_alarm_naming_a_run_says_how_to_cancel_it() {
        let text = render(Kind::Alarm);
        assert!(
            text.contains("load-test-runs/lt_0193a1b2c3d4e5f60718293a4b5c6d7e/cancel"),
            "{text}"
        );
    }
}

//! Operator instructions: `templates/<kind>.hbs`, handlebars in strict mode (a template naming a
//! field its context lacks fails to render instead of printing an empty string), output not
//! HTML-escaped (instructions are shell commands and JSON bodies, not HTML).
//!
//! The templates are compiled into the binary ([`Templates::embedded`]), so what was tested is
//! what runs; [`Templates::from_dir`] loads a directory instead (editing instructions without a
//! rebuild). Either way every kind must have its template, checked when they are loaded.

use super::rules::Kind;
use handlebars::Handlebars;
use serde_json::Value;
use std::path::Path;

macro_rules! embedded {
    ($($kind:literal),* $(,)?) => {
        /// Every template, as compiled in: `(kind, source)`.
        pub const EMBEDDED: &[(&str, &str)] = &[
            $( ($kind, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates/", $kind, ".hbs"))), )*
        ];
    };
}

embedded![
    "runner_fallback",
    "arrivals_missed",
    "stop_condition_breached",
    "run_cancelled",
    "quality_fallback",
    "quality_evaluation_failed",
    "routing_binding_applied",
    "routing_binding_rolled_back",
    "alarm",
    "warn_event",
    "critical_event",
    "projection_dead_letter",
    "sink_dead_letter",
    "projection_stalled",
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("action-log kind {kind} has no template templates/{kind}.hbs")]
    Missing { kind: &'static str },
    #[error("templates/{kind}.hbs does not compile: {error}")]
    Compile { kind: String, error: String },
    #[error("templates/{kind}.hbs does not render: {error}")]
    Render { kind: &'static str, error: String },
    #[error("cannot read templates/{kind}.hbs: {error}")]
    Read { kind: &'static str, error: String },
}

/// The compiled templates, one per [`Kind`].
pub struct Templates {
    registry: Handlebars<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

fn registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry
}

impl Templates {
    /// The templates compiled into this build.
    pub fn embedded() -> Result<Self, TemplateError> {
        Self::from_sources(EMBEDDED.iter().map(|(k, s)| (k.to_string(), s.to_string())))
    }

    /// `<dir>/<kind>.hbs` for every kind.
    pub fn from_dir(dir: &Path) -> Result<Self, TemplateError> {
        let mut sources = Vec::new();
        for kind in Kind::ALL {
            let path = dir.join(format!("{}.hbs", kind.as_str()));
            let source = std::fs::read_to_string(&path).map_err(|e| TemplateError::Read {
                kind: kind.as_str(),
                error: format!("{}: {e}", path.display()),
            })?;
            sources.push((kind.as_str().to_string(), source));
        }
        Self::from_sources(sources)
    }

    /// Compiles `(kind, source)` pairs; every kind must be among them.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, TemplateError> {
        let mut registry = registry();
        for (kind, source) in sources {
            registry
                .register_template_string(&kind, source)
                .map_err(|e| TemplateError::Compile {
                    kind: kind.clone(),
                    error: e.to_string(),
                })?;
        }
        for kind in Kind::ALL {
            if !registry.has_template(kind.as_str()) {
                return Err(TemplateError::Missing {
                    kind: kind.as_str(),
                });
            }
        }
        Ok(Self { registry })
    }

    pub fn render(&self, kind: Kind, context: &Value) -> Result<String, TemplateError> {
        self.registry
            .render(kind.as_str(), context)
            .map(|text| text.trim().to_string())
            .map_err(|e| TemplateError::Render {
                kind: kind.as_str(),
                error: e.to_string(),
            })
    }
}

//! Every read model, registered in one place.

pub mod benchmarks;
pub mod load_tests;
pub mod pricing;
pub mod quality;
pub mod routing;
pub mod variants;

use crate::projection::Projection;
use std::sync::Arc;

/// The one registration point of projections.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(load_tests::LoadTestsProjection),
        Arc::new(variants::VariantsProjection),
        Arc::new(benchmarks::BenchmarksProjection),
        Arc::new(quality::QualityProjection),
        Arc::new(pricing::PricingProjection),
        Arc::new(routing::RoutingProjection),
    ]
}

/// The projections whose names are given; an unknown name is an error naming the known ones.
pub fn select(names: &[String]) -> Result<Vec<Arc<dyn Projection>>, String> {
    let all = all_projections();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|p| p.name() == n).cloned().ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
                format!("unknown projection {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

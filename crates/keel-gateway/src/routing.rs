//! Model names to targets.

use keel_types::{ModelName, TargetId};

use crate::config::RouteConfig;

/// The routes of a config, looked up by requested model name.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
}

impl RouteTable {
    /// Builds the table; the order of `routes` is kept for display.
    pub fn new(routes: Vec<RouteConfig>) -> RouteTable {
        RouteTable { routes }
    }

    /// The route for a requested model: an exact (tag-aware) match first, else `"*"`.
    pub fn resolve(&self, model: &str) -> Option<&RouteConfig> {
        let requested = ModelName::new(model);
        self.routes
            .iter()
            .find(|r| r.model != "*" && requested.same_model(&r.model))
            .or_else(|| self.routes.iter().find(|r| r.model == "*"))
    }

    /// The first target of the `"*"` route, or of the first route: where requests that name no
    /// model (listings, version, model management) go.
    pub fn default_target(&self) -> Option<&TargetId> {
        self.routes.iter().find(|r| r.model == "*").or(self.routes.first()).and_then(|r| r.targets.first())
    }

    /// The key of every configured target, `upstream:route-model` (the route's model is `*` for
    /// the wildcard route unless the target renames it), in declaration order without repeats.
    pub fn target_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for route in &self.routes {
            for target in &route.targets {
                let key = target.display_name(&route.model);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// All routes in declaration order.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(model: &str, targets: &[&str]) -> RouteConfig {
        RouteConfig {
            model: model.into(),
            targets: targets.iter().map(|t| TargetId::parse(t).unwrap()).collect(),
            prefer_loaded: false,
            schema: None,
            canned: None,
        }
    }

    #[test]
    fn exact_then_wildcard() {
        let table = RouteTable::new(vec![route("*", &["local"]), route("llama3.2", &["backup", "local:qwen"])]);
        assert_eq!(table.resolve("llama3.2").unwrap().targets[0].upstream, "backup");
        assert_eq!(table.resolve("llama3.2:latest").unwrap().targets[0].upstream, "backup");
        assert_eq!(table.resolve("llama3.2:1b").unwrap().targets[0].upstream, "local");
        assert_eq!(table.resolve("mistral").unwrap().model, "*");
        assert_eq!(table.default_target().unwrap().upstream, "local");
    }

    #[test]
    fn no_wildcard_means_unknown_models_are_unrouted() {
        let table = RouteTable::new(vec![route("llama3.2", &["local"])]);
        assert!(table.resolve("mistral").is_none());
        assert_eq!(table.default_target().unwrap().upstream, "local");
    }
}

//! Model names to targets.

use keel_types::{ModelName, TargetId};

use crate::config::RouteConfig;

/// The breaker (and observation) key of `target` for a request: `upstream:model`, the model being
/// the one that upstream is asked for — the route's model for a named route, the client's for the
/// `"*"` route, a target's own when it renames — without an implied `:latest`. So every model
/// has its own breaker, also behind the wildcard route: one model's failures never refuse
/// another's requests.
pub(crate) fn breaker_key(target: &TargetId, route_model: &str, requested: &str) -> String {
    let asked = if route_model == "*" { requested } else { route_model };
    let model = target.model_for(asked);
    let model = model.strip_suffix(":latest").unwrap_or(model);
    // Joined by hand: `format!` costs several times more, and this runs on every attempt.
    let mut key = String::with_capacity(target.upstream.len() + 1 + model.len());
    key.push_str(&target.upstream);
    key.push(':');
    key.push_str(model);
    key
}

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

    /// The breaker key of every target the config names a model for (`upstream:model`), in
    /// declaration order without repeats. Targets of the `"*"` route that keep the client's model
    /// name have no key until a model is asked for (see [`breaker_key`]).
    pub fn target_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for route in &self.routes {
            for target in &route.targets {
                if route.model == "*" && target.model.is_none() {
                    continue;
                }
                let key = breaker_key(target, &route.model, &route.model);
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
            requests_per_minute: 0,
            tokens_per_minute: 0,
            allow_remote: false,
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
    fn every_model_has_its_own_key_also_behind_the_wildcard() {
        let local = TargetId::parse("local").unwrap();
        assert_eq!(breaker_key(&local, "*", "llama3.2"), "local:llama3.2");
        assert_eq!(breaker_key(&local, "*", "llama3.2:latest"), "local:llama3.2");
        assert_eq!(breaker_key(&local, "*", "qwen2.5:0.5b"), "local:qwen2.5:0.5b");
        assert_eq!(breaker_key(&local, "llama3.2", "llama3.2:latest"), "local:llama3.2");
        let renamed = TargetId::parse("local:qwen").unwrap();
        assert_eq!(breaker_key(&renamed, "*", "anything"), "local:qwen");
        let table = RouteTable::new(vec![route("*", &["local", "backup:tiny"]), route("llama3.2", &["backup"])]);
        assert_eq!(table.target_keys(), ["backup:tiny", "backup:llama3.2"]);
    }

    #[test]
    fn no_wildcard_means_unknown_models_are_unrouted() {
        let table = RouteTable::new(vec![route("llama3.2", &["local"])]);
        assert!(table.resolve("mistral").is_none());
        assert_eq!(table.default_target().unwrap().upstream, "local");
    }
}

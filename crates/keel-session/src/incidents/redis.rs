//! [`IncidentStore`] on the redis store (placeholder, being written).

#![allow(unused_variables, unused_imports, reason = "placeholder")]

use super::*;
use crate::redis_store::RedisStore;

impl IncidentStore for RedisStore {
    fn record_event(&self, event: NewIncidentEvent) -> StoreFuture<'_, Recorded> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn incident<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn list_incidents(&self, status: Option<IncidentStatus>, limit: usize) -> StoreFuture<'_, Vec<Incident>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn incident_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<IncidentEvent>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn resolve_incident<'a>( &'a self, id: &'a str, by: &'a str, fixed_by: Option<String>, ) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn playbook<'a>(&'a self, fingerprint: &'a str) -> StoreFuture<'a, Vec<PlaybookEntry>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn put_runbook(&self, runbook: Runbook) -> StoreFuture<'_, ()> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn runbook<'a>(&'a self, incident_id: &'a str) -> StoreFuture<'a, Option<Runbook>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }
}

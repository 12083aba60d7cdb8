//! [`JobStore`] on the redis store (placeholder, being written).

#![allow(unused_variables, unused_imports, reason = "placeholder")]

use super::*;
use crate::redis_store::RedisStore;

impl JobStore for RedisStore {
    fn enqueue(&self, job: NewJob) -> StoreFuture<'_, Enqueued> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn claim<'a>( &'a self, worker: &'a str, kinds: &'a [String], now: i64, lease_ms: i64, ) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn complete<'a>(&'a self, id: &'a str, worker: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn retry<'a>( &'a self, id: &'a str, worker: &'a str, error: &'a str, run_at: i64, now: i64, ) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn fail<'a>(&'a self, id: &'a str, worker: &'a str, error: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn count_jobs(&self) -> StoreFuture<'_, JobCounts> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }

    fn prune_jobs(&self, before: i64) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::Backend { backend: "redis", message: "not built yet".to_owned() }) })
    }
}

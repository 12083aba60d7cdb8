//! [`HistoryStore`] on the PostgreSQL store: one statement per call on its pool.

use serde_json::Value;

use super::{HistoryStore, MAX_SAMPLES_I64, Sample, check_sample, check_source, parse_sample};
use crate::StoreError;
use crate::postgres::{PostgresStore, column_error, execute, query};
use crate::store::StoreFuture;

const BACKEND: &str = "postgres";

impl HistoryStore for PostgresStore {
    fn put_sample<'a>(&'a self, source: &'a str, minute: i64, sample: Value) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = check_sample(source, minute, &sample)?;
            let client = self.client().await?;
            execute(
                &client,
                "INSERT INTO metric_minutes (source, minute, sample) VALUES ($1, $2, $3)
                 ON CONFLICT (source, minute) DO UPDATE SET sample = excluded.sample",
                &[&source, &minute, &json],
            )
            .await?;
            Ok(())
        })
    }

    fn samples<'a>(&'a self, source: &'a str, since_minute: i64) -> StoreFuture<'a, Vec<Sample>> {
        Box::pin(async move {
            check_source(source)?;
            let client = self.client().await?;
            // The newest first, to keep the newest when there are more; turned around below.
            let rows = query(
                &client,
                "SELECT minute, sample FROM metric_minutes WHERE source = $1 AND minute >= $2
                 ORDER BY minute DESC LIMIT $3",
                &[&source, &since_minute, &MAX_SAMPLES_I64],
            )
            .await?;
            rows.iter()
                .rev()
                .map(|row| {
                    let minute: i64 = row.try_get(0).map_err(column_error)?;
                    let json: &str = row.try_get(1).map_err(column_error)?;
                    parse_sample(BACKEND, source, minute, json)
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
    }

    fn prune_samples(&self, before_minute: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            execute(&client, "DELETE FROM metric_minutes WHERE minute < $1", &[&before_minute]).await
        })
    }
}

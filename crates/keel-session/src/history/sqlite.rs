//! [`HistoryStore`] on the SQLite store: puts and prunes go through its writer thread
//! ([`SqliteStore::write_with`], so they share its group commits), reads through its readers.

use rusqlite::params;
use serde_json::Value;

use super::{HistoryStore, MAX_SAMPLES_I64, Sample, check_sample, check_source, parse_sample};
use crate::sqlite::{SqliteStore, db_error};
use crate::store::StoreFuture;

const BACKEND: &str = "sqlite";

impl HistoryStore for SqliteStore {
    fn put_sample<'a>(&'a self, source: &'a str, minute: i64, sample: Value) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = check_sample(source, minute, &sample)?;
            let source = source.to_owned();
            self.write_with(move |conn, _| {
                conn.prepare_cached(
                    "INSERT INTO metric_minutes (source, minute, sample) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source, minute) DO UPDATE SET sample = excluded.sample",
                )
                .and_then(|mut upsert| upsert.execute(params![source, minute, json]))
                .map(|_| ())
                .map_err(db_error)
            })
            .await
        })
    }

    fn samples<'a>(&'a self, source: &'a str, since_minute: i64) -> StoreFuture<'a, Vec<Sample>> {
        Box::pin(async move {
            check_source(source)?;
            let source = source.to_owned();
            self.read(move |conn| {
                // The newest first, to keep the newest when there are more; turned around below.
                let rows = conn
                    .prepare_cached(
                        "SELECT minute, sample FROM metric_minutes WHERE source = ?1 AND minute >= ?2
                         ORDER BY minute DESC LIMIT ?3",
                    )
                    .and_then(|mut select| {
                        select
                            .query_map(params![source, since_minute, MAX_SAMPLES_I64], |row| {
                                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_error)?;
                rows.iter().rev().map(|(minute, json)| parse_sample(BACKEND, &source, *minute, json)).collect()
            })
            .await
        })
    }

    fn prune_samples(&self, before_minute: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.write_with(move |conn, _| {
            conn.prepare_cached("DELETE FROM metric_minutes WHERE minute < ?1")
                .and_then(|mut delete| delete.execute([before_minute]))
                .map(|deleted| deleted as u64)
                .map_err(db_error)
        }))
    }
}

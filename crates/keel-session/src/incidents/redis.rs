//! [`IncidentStore`] on the Redis store, on its connection and under its prefix `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P incident:ID` | hash | the incident's fields (`status`, `opened_at`, `event_count`, …; `upstream`, `model`, `mitigated_at` and `resolved_at` only when set) |
//! | `P incident-events:ID` | list | its timeline: event `seq` is item `seq - 1`, as JSON `{"at","event","effect","detail"}` |
//! | `P incidents:open` | hash | fingerprint → id of its incident not resolved |
//! | `P incidents:byopened` | sorted set | every incident's id scored by `opened_at`, for listing |
//! | `P incidents:status:STATUS` | sorted set | the ids in that status scored by `opened_at`, for listing |
//! | `P runbook:ID` | string | the incident's runbook as JSON |
//! | `P playbook:FINGERPRINT` | list | the fixes confirmed for the fingerprint as JSON `{"fix","incident_id","at"}`, newest first, at most [`MAX_PLAYBOOK_LISTED`] |
//!
//! Recording an event and resolving by hand are each one Lua script: it finds (or opens) the
//! incident through `incidents:open`, appends the event at the next `seq`, moves the status and,
//! when the status changed, enqueues the [`INCIDENT_CHANGED_JOB`] with the Lua function of the
//! job store (`RedisStore::JOB_LUA`, in `jobs/redis.rs`), so the change and its job are one
//! atomic step however many keel instances record at once. Which status an effect leads to is
//! decided in Rust ([`Effect::apply`]) for each status the incident may have, and the script picks
//! the answer for the status it finds. Like the sessions, a single Redis server is assumed: the
//! scripts build the names of the keys they touch from `P` and the ids they read.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Effect, INCIDENT_CHANGED_JOB, Incident, IncidentEvent, IncidentStatus, IncidentStore, MAX_EVENTS_LISTED,
    MAX_PLAYBOOK_LISTED, NewIncidentEvent, PlaybookEntry, Recorded, Runbook, check_event, check_incident_id,
    check_resolve, check_runbook, new_incident_id,
};
use crate::StoreError;
use crate::jobs::{NewJob, new_job_id};
use crate::redis_store::{RedisStore, corrupt, redis_error};
use crate::store::{StoreFuture, check_name, now_millis};

/// A hash as read from Redis.
type Fields = HashMap<String, String>;

/// What the write scripts return: a code, the status before (`''`: none), the seq of the event
/// appended (0: none) and the incident's hash.
type Outcome = (i64, String, u64, Fields);

/// Lua functions of the incident scripts (after [`RedisStore::JOB_LUA`]):
///
/// - `append_event(P, id, key, event, now)` appends the event JSON to the timeline of incident
///   `id` (hash `key`), moves its `updated_at` up to `now` and returns the event's seq.
/// - `set_status(P, id, key, from, to, now)` moves the incident from status `from` (`false`: a
///   new one) to `to` and enqueues its change job for the last event (`ARGV` 2 to 4 of every
///   script: the job's id, kind and attempts).
const INCIDENT_LUA: &str = r#"
local function append_event(P, id, key, event, now)
  local seq = redis.call('HINCRBY', key, 'event_count', 1)
  redis.call('RPUSH', P .. 'incident-events:' .. id, event)
  if tonumber(now) > tonumber(redis.call('HGET', key, 'updated_at')) then
    redis.call('HSET', key, 'updated_at', now)
  end
  return seq
end

local function set_status(P, id, key, from, to, now)
  local incident = redis.call('HMGET', key, 'fingerprint', 'opened_at', 'event_count')
  if from then redis.call('ZREM', P .. 'incidents:status:' .. from, id) end
  redis.call('ZADD', P .. 'incidents:status:' .. to, incident[2], id)
  redis.call('HSET', key, 'status', to)
  if to == 'mitigated' then redis.call('HSET', key, 'mitigated_at', now) end
  if to == 'resolved' then
    redis.call('HSET', key, 'resolved_at', now)
    if redis.call('HGET', P .. 'incidents:open', incident[1]) == id then
      redis.call('HDEL', P .. 'incidents:open', incident[1])
    end
  end
  local from_json = 'null'
  if from then from_json = '"' .. from .. '"' end
  local payload = '{"incident_id":"' .. id .. '","from":' .. from_json .. ',"to":"' .. to .. '","at":' .. now .. '}'
  enqueue_job(P, ARGV[2], ARGV[3], id .. ':' .. incident[3], payload, now, ARGV[4], now)
end
"#;

/// `ARGV` P, job id, job kind, job attempts, now, fingerprint, new id, event JSON, the status
/// after the effect with no incident, an open one and a mitigated one (`''`: none), kind, title,
/// upstream and model (`''`: none). Returns an [`Outcome`] with code 0 (nothing opened) or 1.
/// An `incidents:open` entry whose incident is gone or resolved is treated as no entry.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{INCIDENT_LUA}{}",
        RedisStore::JOB_LUA,
        r"
local P, now, fingerprint = ARGV[1], ARGV[5], ARGV[6]
local open = P .. 'incidents:open'
local id = redis.call('HGET', open, fingerprint)
local from = false
if id then
  from = redis.call('HGET', P .. 'incident:' .. id, 'status')
  if from ~= 'open' and from ~= 'mitigated' then from = false end
end
if not from then id = ARGV[7] end
local key = P .. 'incident:' .. id
local to
if not from then to = ARGV[9] elseif from == 'open' then to = ARGV[10] else to = ARGV[11] end
if to == '' then return {0, '', 0, {}} end
if not from then
  redis.call('HSET', key, 'id', id, 'fingerprint', fingerprint, 'kind', ARGV[12], 'title', ARGV[13],
    'opened_at', now, 'updated_at', now, 'event_count', 0)
  if ARGV[14] ~= '' then redis.call('HSET', key, 'upstream', ARGV[14]) end
  if ARGV[15] ~= '' then redis.call('HSET', key, 'model', ARGV[15]) end
  redis.call('HSET', open, fingerprint, id)
  redis.call('ZADD', P .. 'incidents:byopened', now, id)
end
local seq = append_event(P, id, key, ARGV[8], now)
if to ~= from then set_status(P, id, key, from, to, now) end
return {1, from or '', seq, redis.call('HGETALL', key)}
"
    ))
});

/// `ARGV` P, job id, job kind, job attempts, now, incident id, event JSON, playbook entry JSON
/// (`''`: none), the playbook's length. Returns an [`Outcome`] with code 0 (no incident), 1 (already resolved) or 2.
static RESOLVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{INCIDENT_LUA}{}",
        RedisStore::JOB_LUA,
        r"
local P, now, id = ARGV[1], ARGV[5], ARGV[6]
local key = P .. 'incident:' .. id
local from = redis.call('HGET', key, 'status')
if not from then return {0, '', 0, {}} end
if ARGV[8] ~= '' then
  local playbook = P .. 'playbook:' .. redis.call('HGET', key, 'fingerprint')
  redis.call('LPUSH', playbook, ARGV[8])
  redis.call('LTRIM', playbook, 0, ARGV[9] - 1)
end
if from == 'resolved' then return {1, from, 0, redis.call('HGETALL', key)} end
local seq = append_event(P, id, key, ARGV[7], now)
set_status(P, id, key, from, 'resolved', now)
return {2, from, seq, redis.call('HGETALL', key)}
"
    ))
});

/// `ARGV` P, incident id, runbook JSON. Returns 1 if stored, 0 if there is no such incident.
static PUT_RUNBOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', ARGV[1] .. 'incident:' .. ARGV[2]) == 0 then return 0 end
redis.call('SET', ARGV[1] .. 'runbook:' .. ARGV[2], ARGV[3])
return 1
",
    )
});

/// An event as stored in the timeline list (its incident and seq are the key and the place).
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    at: i64,
    event: String,
    effect: Effect,
    detail: Value,
}

impl StoredEvent {
    fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::InvalidInput(format!("event cannot be stored: {e}")))
    }

    fn decode(incident_id: &str, seq: u64, json: &str) -> Result<IncidentEvent, StoreError> {
        let stored: StoredEvent =
            serde_json::from_str(json).map_err(|e| corrupt(format!("event {seq} of incident '{incident_id}': {e}")))?;
        Ok(IncidentEvent {
            incident_id: incident_id.to_owned(),
            seq,
            at: stored.at,
            event: stored.event,
            effect: stored.effect,
            detail: stored.detail,
        })
    }
}

/// A playbook entry as stored in the list of its fingerprint.
#[derive(Debug, Serialize, Deserialize)]
struct StoredFix {
    fix: String,
    incident_id: String,
    at: i64,
}

/// An incident from its hash.
fn decode_incident(mut hash: Fields) -> Result<Incident, StoreError> {
    let mut take = |field: &str| hash.remove(field).ok_or_else(|| corrupt(format!("incident hash lacks '{field}'")));
    let id = take("id")?;
    let bad = |field: &str, text: &str| corrupt(format!("incident '{id}' has {field} '{text}'"));
    let number = |field: &str, text: String| text.parse::<i64>().map_err(|_| bad(field, &text));
    let status = take("status")?;
    let status = status.parse().map_err(|_| bad("status", &status))?;
    let event_count = take("event_count")?;
    let event_count = event_count.parse().map_err(|_| bad("event_count", &event_count))?;
    let incident = Incident {
        fingerprint: take("fingerprint")?,
        kind: take("kind")?,
        title: take("title")?,
        status,
        opened_at: number("opened_at", take("opened_at")?)?,
        updated_at: number("updated_at", take("updated_at")?)?,
        event_count,
        upstream: hash.remove("upstream"),
        model: hash.remove("model"),
        mitigated_at: hash.remove("mitigated_at").map(|text| number("mitigated_at", text)).transpose()?,
        resolved_at: hash.remove("resolved_at").map(|text| number("resolved_at", text)).transpose()?,
        id: id.clone(),
    };
    Ok(incident)
}

/// The status before a write, as the scripts return it (`''`: none).
fn decode_previous(text: &str) -> Result<Option<IncidentStatus>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| corrupt(format!("incident status '{text}'")))
}

/// `ARGV` 2 to 4 of the write scripts: a new change job's id, its kind and attempts.
fn change_job() -> (String, String, u32) {
    let template = NewJob::new(INCIDENT_CHANGED_JOB, String::new(), Value::Null);
    (new_job_id(), template.kind, template.max_attempts)
}

impl RedisStore {
    fn incident_key(&self, id: &str) -> String {
        format!("{}incident:{id}", self.prefix)
    }

    fn incident_events_key(&self, id: &str) -> String {
        format!("{}incident-events:{id}", self.prefix)
    }

    fn runbook_key(&self, id: &str) -> String {
        format!("{}runbook:{id}", self.prefix)
    }

    fn playbook_key(&self, fingerprint: &str) -> String {
        format!("{}playbook:{fingerprint}", self.prefix)
    }
}

impl IncidentStore for RedisStore {
    fn record_event(&self, event: NewIncidentEvent) -> StoreFuture<'_, Recorded> {
        Box::pin(async move {
            check_event(&event)?;
            let now = now_millis();
            let stored =
                StoredEvent { at: now, event: event.event, effect: event.effect, detail: event.detail }.encode()?;
            let after = |current| event.effect.apply(current).map_or("", IncidentStatus::as_str);
            let (job_id, job_kind, job_attempts) = change_job();
            let (code, previous, seq, hash): Outcome = RECORD
                .arg(&self.prefix)
                .arg(job_id)
                .arg(job_kind)
                .arg(job_attempts)
                .arg(now)
                .arg(&event.fingerprint)
                .arg(new_incident_id())
                .arg(&stored)
                .arg(after(None))
                .arg(after(Some(IncidentStatus::Open)))
                .arg(after(Some(IncidentStatus::Mitigated)))
                .arg(&event.kind)
                .arg(&event.title)
                .arg(event.upstream.as_deref().unwrap_or(""))
                .arg(event.model.as_deref().unwrap_or(""))
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if code == 0 {
                return Ok(Recorded { incident: None, event: None, previous: None });
            }
            let incident = decode_incident(hash)?;
            let event = StoredEvent::decode(&incident.id, seq, &stored)?;
            Ok(Recorded { previous: decode_previous(&previous)?, event: Some(event), incident: Some(incident) })
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let hash: Fields = redis::cmd("HGETALL")
                .arg(self.incident_key(id))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if hash.is_empty() {
                return Ok(None);
            }
            decode_incident(hash).map(Some)
        })
    }

    fn list_incidents(&self, status: Option<IncidentStatus>, limit: usize) -> StoreFuture<'_, Vec<Incident>> {
        Box::pin(async move {
            let index = match status {
                Some(status) => format!("{}incidents:status:{status}", self.prefix),
                None => format!("{}incidents:byopened", self.prefix),
            };
            let hashes = self.newest_hashes(index, format!("{}incident:", self.prefix), limit).await?;
            hashes.into_iter().map(decode_incident).collect()
        })
    }

    fn incident_events<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Vec<IncidentEvent>> {
        Box::pin(async move {
            check_incident_id(id)?;
            let items: Vec<String> = redis::cmd("LRANGE")
                .arg(self.incident_events_key(id))
                .arg(0)
                .arg(MAX_EVENTS_LISTED.saturating_sub(1))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            (1..).zip(items).map(|(seq, json)| StoredEvent::decode(id, seq, &json)).collect()
        })
    }

    fn resolve_incident<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        fixed_by: Option<String>,
    ) -> StoreFuture<'a, Option<Incident>> {
        Box::pin(async move {
            check_resolve(id, by, fixed_by.as_deref())?;
            let now = now_millis();
            let stored = StoredEvent {
                at: now,
                event: "incident.resolved".to_owned(),
                effect: Effect::Resolve,
                detail: serde_json::json!({ "by": by, "fixed_by": fixed_by }),
            }
            .encode()?;
            let entry = match fixed_by {
                Some(fix) => serde_json::to_string(&StoredFix { fix, incident_id: id.to_owned(), at: now })
                    .map_err(|e| StoreError::InvalidInput(format!("fix cannot be stored: {e}")))?,
                None => String::new(),
            };
            let (job_id, job_kind, job_attempts) = change_job();
            let (code, _, _, hash): Outcome = RESOLVE
                .arg(&self.prefix)
                .arg(job_id)
                .arg(job_kind)
                .arg(job_attempts)
                .arg(now)
                .arg(id)
                .arg(stored)
                .arg(entry)
                .arg(MAX_PLAYBOOK_LISTED)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if code == 0 {
                return Ok(None);
            }
            decode_incident(hash).map(Some)
        })
    }

    fn playbook<'a>(&'a self, fingerprint: &'a str) -> StoreFuture<'a, Vec<PlaybookEntry>> {
        Box::pin(async move {
            check_name("fingerprint", fingerprint)?;
            let items: Vec<String> = redis::cmd("LRANGE")
                .arg(self.playbook_key(fingerprint))
                .arg(0)
                .arg(MAX_PLAYBOOK_LISTED - 1)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            items
                .iter()
                .map(|json| {
                    let fix: StoredFix = serde_json::from_str(json)
                        .map_err(|e| corrupt(format!("playbook entry of '{fingerprint}': {e}")))?;
                    Ok(PlaybookEntry {
                        fingerprint: fingerprint.to_owned(),
                        fix: fix.fix,
                        incident_id: fix.incident_id,
                        at: fix.at,
                    })
                })
                .collect()
        })
    }

    fn put_runbook(&self, runbook: Runbook) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            check_runbook(&runbook)?;
            let json = serde_json::to_string(&runbook)
                .map_err(|e| StoreError::InvalidInput(format!("runbook cannot be stored: {e}")))?;
            let stored: i64 = PUT_RUNBOOK
                .arg(&self.prefix)
                .arg(&runbook.incident_id)
                .arg(json)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if stored == 0 {
                return Err(StoreError::InvalidInput(format!("no incident '{}'", runbook.incident_id)));
            }
            Ok(())
        })
    }

    fn runbook<'a>(&'a self, incident_id: &'a str) -> StoreFuture<'a, Option<Runbook>> {
        Box::pin(async move {
            check_incident_id(incident_id)?;
            let json: Option<String> = redis::cmd("GET")
                .arg(self.runbook_key(incident_id))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            json.map(|json| {
                serde_json::from_str(&json).map_err(|e| corrupt(format!("runbook of '{incident_id}': {e}")))
            })
            .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_decode_from_their_hash() {
        let mut hash: Fields = [
            ("id", "inc_1"),
            ("fingerprint", "f"),
            ("kind", "upstream_down"),
            ("title", "t"),
            ("status", "mitigated"),
            ("model", "m"),
            ("opened_at", "1"),
            ("updated_at", "3"),
            ("mitigated_at", "2"),
            ("event_count", "2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let incident = decode_incident(hash.clone()).unwrap();
        assert_eq!(incident.status, IncidentStatus::Mitigated);
        assert_eq!((incident.upstream, incident.model.as_deref()), (None, Some("m")));
        assert_eq!((incident.mitigated_at, incident.resolved_at, incident.event_count), (Some(2), None, 2));
        hash.insert("status".into(), "gone".into());
        assert!(decode_incident(hash).is_err());
        assert_eq!(decode_previous("").unwrap(), None);
        assert_eq!(decode_previous("open").unwrap(), Some(IncidentStatus::Open));
    }

    #[test]
    fn events_round_trip_through_json() {
        let stored =
            StoredEvent { at: 5, event: "e".into(), effect: Effect::Note, detail: serde_json::json!({"a": 1}) };
        let event = StoredEvent::decode("inc_1", 3, &stored.encode().unwrap()).unwrap();
        assert_eq!((event.seq, event.at, event.effect), (3, 5, Effect::Note));
        assert!(StoredEvent::decode("inc_1", 1, "{}").is_err());
    }
}

//! The Redis backend (`redis://host:port/db?prefix=P`).
//!
//! Keys, all starting with the prefix `P` (default `keel:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P s:ID` | hash | the session's fields (`version`, `token_count`, `last_seq`, … as integers) |
//! | `P m:ID` | hash | `seq` → the message as JSON (without `session_id` and `seq`) |
//! | `P k:ID` | hash | idempotency key → `seq` |
//! | `P p:ID` | hash | participant name → `POSITION ADDED_AT {"kind":…,"role":…}` |
//! | `P index` | sorted set | session ids scored by `updated_at`, for listing |
//! | `P apikeys`, `P apikeys:revoked` | hash, list | API keys ([`KeyStore`](crate::KeyStore), in `keys/redis.rs`) |
//! | `P history:SOURCE`, `P history-sources` | sorted set, set | per-minute samples ([`HistoryStore`](crate::HistoryStore), in `history/redis.rs`) |
//!
//! A participant's position (its place in the order added) comes from the counter
//! `participant_seq` in the session hash; re-adding a name keeps its position and `added_at` and
//! replaces the JSON. Each add, remove and handoff is one script touching one field of `p:ID`, so
//! concurrent changes never overwrite each other.
//!
//! Every write is one Lua script, so it is atomic on the server: an append checks the session
//! and the idempotency key, takes the next `seq` with `HINCRBY` and bumps the counters in one
//! step, however many keel instances append to one session. Scripts do their checks and the write
//! that may fail (a counter overflow) before any other write, since Redis does not roll a script
//! back. A single Redis server (not a cluster) is assumed: scripts touch several keys.
//!
//! Durability is the server's: with `appendonly yes` and `appendfsync everysec` a crash of Redis
//! loses at most about a second of appends; without persistence a restart of Redis loses all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, RedisError, Script};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;
use crate::location::Location;
use crate::model::{
    Cursor, Message, MessageCompletion, NewMessage, NewParticipant, NewSession, Page, Participant, ParticipantKind,
    Session, SessionFilter, SessionPage, SessionPatch,
};
use crate::store::{
    Store, StoreFuture, apply_completion, check_handoff, check_id, check_key, check_message, check_participant,
    check_participant_name, get_or_insert, now_millis, to_i64,
};

const BACKEND: &str = "redis";
const DEFAULT_PREFIX: &str = "keel:";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions read per round trip while listing.
const LIST_BATCH: usize = 256;
/// Messages read per `HMGET`.
const READ_BATCH: u64 = 1_000;
/// Attempts of a compare-and-set (completing a message) before giving up.
const CAS_ATTEMPTS: usize = 32;

/// `KEYS[1]` session, `KEYS[2]` index; `ARGV[1]` id, `ARGV[2]` updated_at, `ARGV[3..]` fields.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
";

/// `KEYS` session, messages, keys, index; `ARGV` id, now, tokens, idempotency key ('' = none),
/// message JSON. Returns `{0, 0, ''}` (no session), `{1, seq, json}` (appended) or
/// `{2, seq, json}` (the message stored under the key).
const APPEND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, ''} end
if ARGV[4] ~= '' then
  local stored = redis.call('HGET', KEYS[3], ARGV[4])
  if stored then return {2, tonumber(stored), redis.call('HGET', KEYS[2], stored)} end
end
redis.call('HINCRBY', KEYS[1], 'token_count', ARGV[3])
local seq = redis.call('HINCRBY', KEYS[1], 'last_seq', 1)
redis.call('HSET', KEYS[2], seq, ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], seq) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
local updated = redis.call('HGET', KEYS[1], 'updated_at')
if tonumber(ARGV[2]) > tonumber(updated) then
  updated = ARGV[2]
  redis.call('HSET', KEYS[1], 'updated_at', updated)
end
redis.call('ZADD', KEYS[4], updated, ARGV[1])
return {1, seq, ARGV[5]}
";

/// `KEYS` session, index; `ARGV` expected version, id, updated_at, number of pairs to set, the
/// pairs, then fields to delete. Returns `{0, 0}` (no session), `{1, current}` (stale version) or
/// `{2, 0}` (updated).
const UPDATE: &str = r"
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {0, 0} end
if version ~= ARGV[1] then return {1, tonumber(version)} end
local pairs = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + 2 * pairs))
if #ARGV > 4 + 2 * pairs then redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + 2 * pairs)) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return {2, 0}
";

/// `KEYS` session, messages, keys, index, participants; `ARGV[1]` id. Returns 1 if the session
/// existed.
const DELETE: &str = r"
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
redis.call('ZREM', KEYS[4], ARGV[1])
return existed
";

/// `KEYS` session, participants; `ARGV` name, now, `{"kind":…,"role":…}`. Returns `{0, ''}` (no
/// session) or `{1, stored value}`; an existing name keeps its position and added_at.
const ADD_PARTICIPANT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local head
if old then
  head = string.match(old, '^%d+ %-?%d+ ')
end
if not head then
  head = redis.call('HINCRBY', KEYS[1], 'participant_seq', 1) .. ' ' .. ARGV[2] .. ' '
end
local value = head .. ARGV[3]
redis.call('HSET', KEYS[2], ARGV[1], value)
return {1, value}
";

/// `KEYS` session, participants; `ARGV` name. Returns -1 (no session), 0 (no such participant)
/// or 1 (removed).
const REMOVE_PARTICIPANT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HDEL', KEYS[2], ARGV[1])
";

/// `KEYS` session, messages, index, participants; `ARGV` id, now, from, to, to's
/// `{"kind":…,"role":…}`, message JSON. Returns `{0, 0}` (no session), `{1, 0}` (`from` is no
/// participant) or `{2, seq}` (handed off).
const HANDOFF: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0 then return {1, 0} end
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 0 then
  local position = redis.call('HINCRBY', KEYS[1], 'participant_seq', 1)
  redis.call('HSET', KEYS[4], ARGV[4], position .. ' ' .. ARGV[2] .. ' ' .. ARGV[5])
end
local seq = redis.call('HINCRBY', KEYS[1], 'last_seq', 1)
redis.call('HSET', KEYS[2], seq, ARGV[6])
redis.call('HINCRBY', KEYS[1], 'version', 1)
local updated = redis.call('HGET', KEYS[1], 'updated_at')
if tonumber(ARGV[2]) > tonumber(updated) then
  updated = ARGV[2]
  redis.call('HSET', KEYS[1], 'updated_at', updated)
end
redis.call('ZADD', KEYS[3], updated, ARGV[1])
return {2, seq}
";

/// `KEYS` session, messages, index; `ARGV` seq, old JSON, new JSON, token delta, now, id,
/// version increment (1 to complete a message, 0 to save a partial one). Returns 0 (no
/// session), 1 (the message changed meanwhile: retry) or 2 (done).
const COMPLETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 1 end
redis.call('HINCRBY', KEYS[1], 'token_count', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[7] ~= '0' then redis.call('HINCRBY', KEYS[1], 'version', ARGV[7]) end
local updated = redis.call('HGET', KEYS[1], 'updated_at')
if tonumber(ARGV[5]) > tonumber(updated) then
  updated = ARGV[5]
  redis.call('HSET', KEYS[1], 'updated_at', updated)
end
redis.call('ZADD', KEYS[3], updated, ARGV[6])
return 2
";

/// Connects and returns the store.
pub(crate) async fn open(url: &str) -> Result<Arc<RedisStore>, StoreError> {
    let mut location = Location::parse(url);
    let prefix = location.take("prefix")?.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.chars().any(|c| c.is_control() || matches!(c, '*' | '?' | '[' | ']')) {
        return Err(StoreError::invalid_url("redis prefix must not hold control characters or * ? [ ]"));
    }
    let client = Client::open(location.to_url()).map_err(|e| StoreError::invalid_url(format!("redis: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2);
    let conn = ConnectionManager::new_with_config(client, config).await.map_err(redis_error)?;
    let store = RedisStore {
        conn,
        prefix,
        create: Script::new(CREATE),
        append: Script::new(APPEND),
        update: Script::new(UPDATE),
        delete: Script::new(DELETE),
        complete: Script::new(COMPLETE),
        add_participant: Script::new(ADD_PARTICIPANT),
        remove_participant: Script::new(REMOVE_PARTICIPANT),
        handoff: Script::new(HANDOFF),
    };
    store.health().await?;
    Ok(Arc::new(store))
}

pub(crate) fn redis_error(error: RedisError) -> StoreError {
    if error.is_io_error() || error.is_connection_refusal() || error.is_timeout() || error.is_connection_dropped() {
        StoreError::Unavailable { backend: BACKEND, message: error.to_string() }
    } else {
        StoreError::Backend { backend: BACKEND, message: error.to_string() }
    }
}

pub(crate) fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt { backend: BACKEND, message }
}

/// A message as stored in the messages hash (its session and seq are the key and field).
#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    role: String,
    content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
    token_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    complete: bool,
    created_at: i64,
}

impl StoredMessage {
    fn of(message: &Message) -> Self {
        StoredMessage {
            role: message.role.clone(),
            content: message.content.clone(),
            tool_calls: message.tool_calls.clone(),
            token_count: message.token_count,
            idempotency_key: message.idempotency_key.clone(),
            complete: message.complete,
            created_at: message.created_at,
        }
    }

    fn decode(session_id: &str, seq: u64, json: &str) -> Result<Message, StoreError> {
        let stored: StoredMessage =
            serde_json::from_str(json).map_err(|e| corrupt(format!("message {seq} of session '{session_id}': {e}")))?;
        Ok(Message {
            session_id: session_id.to_owned(),
            seq,
            role: stored.role,
            content: stored.content,
            tool_calls: stored.tool_calls,
            token_count: stored.token_count,
            idempotency_key: stored.idempotency_key,
            complete: stored.complete,
            created_at: stored.created_at,
        })
    }

    fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::InvalidInput(format!("message cannot be stored: {e}")))
    }
}

/// What the participants hash holds of a participant after its position and `added_at`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredParticipant {
    kind: ParticipantKind,
    role: String,
}

impl StoredParticipant {
    fn encode(participant: &NewParticipant) -> Result<String, StoreError> {
        serde_json::to_string(&StoredParticipant { kind: participant.kind, role: participant.role.clone() })
            .map_err(|e| StoreError::InvalidInput(format!("participant cannot be stored: {e}")))
    }

    /// `POSITION ADDED_AT JSON` → (position, the participant).
    fn decode(session_id: &str, name: &str, value: &str) -> Result<(u64, Participant), StoreError> {
        let bad = |what: &str| corrupt(format!("participant '{name}' of session '{session_id}': {what}"));
        let mut parts = value.splitn(3, ' ');
        let position = parts.next().and_then(|text| text.parse().ok()).ok_or_else(|| bad("bad position"))?;
        let added_at = parts.next().and_then(|text| text.parse().ok()).ok_or_else(|| bad("bad added_at"))?;
        let stored: StoredParticipant =
            serde_json::from_str(parts.next().unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
        Ok((
            position,
            Participant {
                session_id: session_id.to_owned(),
                name: name.to_owned(),
                kind: stored.kind,
                role: stored.role,
                added_at,
            },
        ))
    }
}

/// The hash fields of a session; optional fields are absent when `None`.
fn session_fields(session: &Session) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", session.id.clone()),
        ("status", session.status.as_str().to_owned()),
        ("created_at", session.created_at.to_string()),
        ("updated_at", session.updated_at.to_string()),
        ("version", session.version.to_string()),
        ("token_count", session.token_count.to_string()),
        ("last_seq", session.message_count.to_string()),
        ("metadata", session.metadata.to_string()),
    ];
    if let Some(owner) = &session.owner {
        fields.push(("owner", owner.clone()));
    }
    if let Some(model) = &session.model {
        fields.push(("model", model.clone()));
    }
    fields
}

fn decode_session(mut hash: HashMap<String, String>) -> Result<Option<Session>, StoreError> {
    if hash.is_empty() {
        return Ok(None);
    }
    let mut take = |field: &str| hash.remove(field).ok_or_else(|| corrupt(format!("session hash lacks '{field}'")));
    let id = take("id")?;
    let number = |field: &str, text: String| {
        text.parse::<i64>().map_err(|_| corrupt(format!("session '{id}' has {field} '{text}'")))
    };
    let count = |field: &str, text: String| {
        text.parse::<u64>().map_err(|_| corrupt(format!("session '{id}' has {field} '{text}'")))
    };
    let status = take("status")?;
    let status = status.parse().map_err(|_| corrupt(format!("session '{id}' has status '{status}'")))?;
    let session = Session {
        status,
        created_at: number("created_at", take("created_at")?)?,
        updated_at: number("updated_at", take("updated_at")?)?,
        version: count("version", take("version")?)?,
        token_count: count("token_count", take("token_count")?)?,
        message_count: count("last_seq", take("last_seq")?)?,
        metadata: serde_json::from_str(&take("metadata")?)
            .map_err(|e| corrupt(format!("session '{id}' has bad metadata: {e}")))?,
        owner: hash.remove("owner"),
        model: hash.remove("model"),
        id: id.clone(),
    };
    Ok(Some(session))
}

/// The Redis store: one multiplexed, reconnecting connection and the prefix of its keys.
pub(crate) struct RedisStore {
    pub(crate) conn: ConnectionManager,
    pub(crate) prefix: String,
    create: Script,
    append: Script,
    update: Script,
    delete: Script,
    complete: Script,
    add_participant: Script,
    remove_participant: Script,
    handoff: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    fn session_key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }

    fn messages_key(&self, id: &str) -> String {
        format!("{}m:{id}", self.prefix)
    }

    fn keys_key(&self, id: &str) -> String {
        format!("{}k:{id}", self.prefix)
    }

    fn participants_key(&self, id: &str) -> String {
        format!("{}p:{id}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.prefix)
    }

    async fn load_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.session_key(id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        decode_session(hash)
    }

    async fn load_message(&self, id: &str, seq: u64) -> Result<Option<(String, Message)>, StoreError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.messages_key(id))
            .arg(seq)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        json.map(|json| StoredMessage::decode(id, seq, &json).map(|message| (json, message))).transpose()
    }

    /// Creates the session; `Err(new)` back if the id is taken.
    async fn insert_session(&self, new: NewSession) -> Result<Result<Session, NewSession>, StoreError> {
        let session = new.clone().into_session(now_millis());
        let mut invocation = self.create.key(self.session_key(&session.id));
        invocation.key(self.index_key()).arg(&session.id).arg(session.updated_at);
        for (field, value) in session_fields(&session) {
            invocation.arg(field).arg(value);
        }
        let created: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
        Ok(if created == 1 { Ok(session) } else { Err(new) })
    }

    /// [`Store::complete_message`], or with `partial` [`Store::save_partial`] (the message stays
    /// incomplete and the session's version is not bumped): read, then compare-and-set in the
    /// `COMPLETE` script, retried while the message changes underneath.
    async fn finish_message(
        &self,
        session_id: &str,
        seq: u64,
        completion: MessageCompletion,
        partial: bool,
    ) -> Result<Message, StoreError> {
        check_id(session_id)?;
        for _ in 0..CAS_ATTEMPTS {
            let Some(session) = self.load_session(session_id).await? else {
                return Err(StoreError::not_found(session_id));
            };
            let (old_json, mut message) = self
                .load_message(session_id, seq)
                .await?
                .ok_or_else(|| StoreError::MessageNotFound { id: session_id.to_owned(), seq })?;
            let old_tokens = message.token_count;
            if apply_completion(&mut message, &completion, partial, session.token_count)?.is_none() {
                return Ok(message);
            }
            let delta = to_i64(message.token_count, "token count")? - to_i64(old_tokens, "token count")?;
            let new_json = StoredMessage::of(&message).encode()?;
            let code: i64 = self
                .complete
                .key(self.session_key(session_id))
                .key(self.messages_key(session_id))
                .key(self.index_key())
                .arg(seq)
                .arg(&old_json)
                .arg(&new_json)
                .arg(delta)
                .arg(now_millis())
                .arg(session_id)
                .arg(u8::from(!partial))
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            match code {
                0 => return Err(StoreError::not_found(session_id)),
                2 => return Ok(message),
                _ => continue,
            }
        }
        Err(StoreError::Backend {
            backend: BACKEND,
            message: format!("message {seq} of session '{session_id}' kept changing; try again"),
        })
    }
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn create_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            self.insert_session(new).await?.map_err(|new| StoreError::SessionExists { id: new.id })
        })
    }

    fn ensure_session(&self, new: NewSession) -> StoreFuture<'_, Session> {
        Box::pin(async move {
            check_id(&new.id)?;
            let get = |id: String| async move { self.load_session(&id).await };
            get_or_insert(BACKEND, new, get, |new| self.insert_session(new)).await
        })
    }

    fn get_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Session>> {
        Box::pin(async move {
            check_id(id)?;
            self.load_session(id).await
        })
    }

    fn update_session<'a>(
        &'a self,
        id: &'a str,
        expected_version: u64,
        patch: SessionPatch,
    ) -> StoreFuture<'a, Session> {
        Box::pin(async move {
            check_id(id)?;
            let mut session = self.load_session(id).await?.ok_or_else(|| StoreError::not_found(id))?;
            if session.version != expected_version {
                return Err(StoreError::Conflict { current_version: session.version });
            }
            let cleared: Vec<&str> =
                [("owner", matches!(patch.owner, Some(None))), ("model", matches!(patch.model, Some(None)))]
                    .into_iter()
                    .filter_map(|(field, clear)| clear.then_some(field))
                    .collect();
            patch.apply(&mut session, now_millis());
            let fields: Vec<(&str, String)> =
                session_fields(&session).into_iter().filter(|(field, _)| *field != "id").collect();
            let mut invocation = self.update.key(self.session_key(id));
            invocation.key(self.index_key()).arg(expected_version).arg(id).arg(session.updated_at).arg(fields.len());
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
            for field in cleared {
                invocation.arg(field);
            }
            let (code, current): (i64, u64) =
                invocation.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            match code {
                0 => Err(StoreError::not_found(id)),
                1 => Err(StoreError::Conflict { current_version: current }),
                _ => Ok(session),
            }
        })
    }

    fn delete_session<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(id)?;
            let existed: i64 = self
                .delete
                .key(self.session_key(id))
                .key(self.messages_key(id))
                .key(self.keys_key(id))
                .key(self.index_key())
                .key(self.participants_key(id))
                .arg(id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(existed == 1)
        })
    }

    fn list_sessions(&self, filter: SessionFilter, page: Page) -> StoreFuture<'_, SessionPage> {
        Box::pin(async move {
            let (limit, cursor) = page.parse()?;
            let mut conn = self.conn.clone();
            let max = cursor.as_ref().map_or_else(|| "+inf".to_owned(), |cursor| cursor.updated_at.to_string());
            let min = filter.updated_since.map_or_else(|| "-inf".to_owned(), |since| since.to_string());
            // (updated_at from the index, session) in list order; the index score is the order key.
            let mut found: Vec<(i64, Session)> = Vec::new();
            let mut offset = 0;
            'scan: loop {
                let batch: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(self.index_key())
                    .arg(&max)
                    .arg(&min)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(LIST_BATCH)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                if batch.is_empty() {
                    break;
                }
                offset += batch.len();
                // Equal scores come in descending id order, as the list order wants.
                let batch: Vec<(String, i64)> = batch
                    .into_iter()
                    .map(|(id, score)| (id, score as i64))
                    .filter(|(id, score)| cursor.as_ref().is_none_or(|cursor| cursor.precedes(*score, id)))
                    .collect();
                let mut pipe = redis::pipe();
                for (id, _) in &batch {
                    pipe.cmd("HGETALL").arg(self.session_key(id));
                }
                let hashes: Vec<HashMap<String, String>> = if batch.is_empty() {
                    Vec::new()
                } else {
                    pipe.query_async(&mut conn).await.map_err(redis_error)?
                };
                for ((_, score), hash) in batch.into_iter().zip(hashes) {
                    // None: deleted since the index was read.
                    if let Some(session) = decode_session(hash)?
                        && filter.matches(&session)
                    {
                        found.push((score, session));
                        if found.len() > limit {
                            break 'scan;
                        }
                    }
                }
            }
            let next_cursor = if found.len() > limit {
                found.truncate(limit);
                found.last().map(|(score, session)| Cursor { updated_at: *score, id: session.id.clone() }.encode())
            } else {
                None
            };
            Ok(SessionPage { sessions: found.into_iter().map(|(_, session)| session).collect(), next_cursor })
        })
    }

    fn append<'a>(&'a self, session_id: &'a str, message: NewMessage) -> StoreFuture<'a, Message> {
        Box::pin(async move {
            check_id(session_id)?;
            check_message(&message)?;
            let now = now_millis();
            let key = message.idempotency_key.clone().unwrap_or_default();
            let tokens = to_i64(message.token_count, "token count")?;
            let message = message.into_message(session_id, 0, now);
            let json = StoredMessage::of(&message).encode()?;
            let (code, seq, stored): (i64, u64, String) = self
                .append
                .key(self.session_key(session_id))
                .key(self.messages_key(session_id))
                .key(self.keys_key(session_id))
                .key(self.index_key())
                .arg(session_id)
                .arg(now)
                .arg(tokens)
                .arg(&key)
                .arg(&json)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            match code {
                0 => Err(StoreError::not_found(session_id)),
                1 => Ok(Message { seq, ..message }),
                _ => StoredMessage::decode(session_id, seq, &stored),
            }
        })
    }

    fn complete_message<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message> {
        Box::pin(self.finish_message(session_id, seq, completion, false))
    }

    fn save_partial<'a>(
        &'a self,
        session_id: &'a str,
        seq: u64,
        completion: MessageCompletion,
    ) -> StoreFuture<'a, Message> {
        Box::pin(self.finish_message(session_id, seq, completion, true))
    }

    fn messages<'a>(&'a self, session_id: &'a str, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<Message>> {
        Box::pin(async move {
            check_id(session_id)?;
            let mut conn = self.conn.clone();
            let last_seq: Option<u64> = redis::cmd("HGET")
                .arg(self.session_key(session_id))
                .arg("last_seq")
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let last_seq = last_seq.ok_or_else(|| StoreError::not_found(session_id))?;
            let last = last_seq.min(after_seq.saturating_add(limit as u64));
            let mut messages = Vec::new();
            let mut from = after_seq.saturating_add(1);
            while from <= last {
                let to = last.min(from + READ_BATCH - 1);
                let seqs: Vec<u64> = (from..=to).collect();
                let jsons: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(self.messages_key(session_id))
                    .arg(&seqs)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                for (seq, json) in seqs.into_iter().zip(jsons) {
                    // None only if the session was deleted meanwhile.
                    if let Some(json) = json {
                        messages.push(StoredMessage::decode(session_id, seq, &json)?);
                    }
                }
                from = to + 1;
            }
            Ok(messages)
        })
    }

    fn message_by_key<'a>(&'a self, session_id: &'a str, key: &'a str) -> StoreFuture<'a, Option<Message>> {
        Box::pin(async move {
            check_id(session_id)?;
            check_key(key)?;
            let seq: Option<u64> = redis::cmd("HGET")
                .arg(self.keys_key(session_id))
                .arg(key)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            match seq {
                Some(seq) => Ok(self.load_message(session_id, seq).await?.map(|(_, message)| message)),
                None => Ok(None),
            }
        })
    }

    fn add_participant<'a>(&'a self, session_id: &'a str, participant: NewParticipant) -> StoreFuture<'a, Participant> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant(&participant)?;
            let (code, value): (i64, String) = self
                .add_participant
                .key(self.session_key(session_id))
                .key(self.participants_key(session_id))
                .arg(&participant.name)
                .arg(now_millis())
                .arg(StoredParticipant::encode(&participant)?)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if code == 0 {
                return Err(StoreError::not_found(session_id));
            }
            StoredParticipant::decode(session_id, &participant.name, &value).map(|(_, participant)| participant)
        })
    }

    fn remove_participant<'a>(&'a self, session_id: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_id(session_id)?;
            check_participant_name(name)?;
            let removed: i64 = self
                .remove_participant
                .key(self.session_key(session_id))
                .key(self.participants_key(session_id))
                .arg(name)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if removed < 0 {
                return Err(StoreError::not_found(session_id));
            }
            Ok(removed == 1)
        })
    }

    fn participants<'a>(&'a self, session_id: &'a str) -> StoreFuture<'a, Vec<Participant>> {
        Box::pin(async move {
            check_id(session_id)?;
            // MULTI/EXEC: the existence check and the hash come from one moment.
            let (exists, hash): (bool, HashMap<String, String>) = redis::pipe()
                .atomic()
                .cmd("EXISTS")
                .arg(self.session_key(session_id))
                .cmd("HGETALL")
                .arg(self.participants_key(session_id))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if !exists {
                return Err(StoreError::not_found(session_id));
            }
            let mut participants = hash
                .iter()
                .map(|(name, value)| StoredParticipant::decode(session_id, name, value))
                .collect::<Result<Vec<_>, _>>()?;
            participants.sort_unstable_by_key(|(position, _)| *position);
            Ok(participants.into_iter().map(|(_, participant)| participant).collect())
        })
    }

    fn handoff<'a>(
        &'a self,
        session_id: &'a str,
        from: &'a str,
        to: NewParticipant,
        note: Option<String>,
    ) -> StoreFuture<'a, Message> {
        Box::pin(async move {
            check_id(session_id)?;
            let message = check_handoff(from, &to, note.as_deref())?;
            let now = now_millis();
            let message = message.into_message(session_id, 0, now);
            let (code, seq): (i64, u64) = self
                .handoff
                .key(self.session_key(session_id))
                .key(self.messages_key(session_id))
                .key(self.index_key())
                .key(self.participants_key(session_id))
                .arg(session_id)
                .arg(now)
                .arg(from)
                .arg(&to.name)
                .arg(StoredParticipant::encode(&to)?)
                .arg(StoredMessage::of(&message).encode()?)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            match code {
                0 => Err(StoreError::not_found(session_id)),
                1 => Err(StoreError::ParticipantNotFound { id: session_id.to_owned(), name: from.to_owned() }),
                _ => Ok(Message { seq, ..message }),
            }
        })
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_hash_round_trips() {
        let session = NewSession::new("a:b").with_owner("o").into_session(42);
        let hash = session_fields(&session).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(decode_session(hash).unwrap(), Some(session.clone()));
        let mut hash: HashMap<String, String> =
            session_fields(&session).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        hash.insert("version".into(), "-1".into());
        assert!(decode_session(hash).is_err());
        assert_eq!(decode_session(HashMap::new()).unwrap(), None);
    }

    #[test]
    fn stored_participant_round_trips() {
        let new = NewParticipant::human("a b:c").with_role("code reviewer");
        let value = format!("7 -12 {}", StoredParticipant::encode(&new).unwrap());
        let (position, participant) = StoredParticipant::decode("s", "a b:c", &value).unwrap();
        assert_eq!((position, participant), (7, new.into_participant("s", -12)));
        assert!(StoredParticipant::decode("s", "n", "x 1 {}").is_err());
        assert!(StoredParticipant::decode("s", "n", "1 2").is_err());
    }

    #[test]
    fn stored_message_round_trips() {
        let message = NewMessage::assistant("hi").with_tokens(3).partial().into_message("s", 7, 9);
        let json = StoredMessage::of(&message).encode().unwrap();
        assert_eq!(StoredMessage::decode("s", 7, &json).unwrap(), message);
    }
}

//! The checkpointed agent loop: model call → tool calls → done or next iteration.

use std::future::Future;

use keel_session::{Message, NewMessage, SessionStatus, StoreError};
use keel_types::FailureClass;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use keel_session::now_millis;

use crate::checkpoint::{CHECKPOINT_VERSION, Checkpoint, CheckpointStore, FailurePoint, check_run_id};
use crate::step::{LlmError, Phase, StepError, ToolError};

/// How many iterations a run may take unless [`AgentRun::max_iterations`] says otherwise.
pub const DEFAULT_MAX_ITERATIONS: u32 = 20;

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call (OpenAI `tool_calls[].id`), if it gave one.
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The arguments (an object, usually).
    pub arguments: Value,
}

/// What one model call produced: the assistant message (appended to the history as is) and the
/// tool calls to run before the next iteration. No tool calls: the run is done and the message
/// is its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmTurn {
    /// The assistant message, in the caller's chat dialect.
    pub message: Value,
    /// The tool calls, run in order.
    pub tool_calls: Vec<ToolCall>,
}

impl LlmTurn {
    /// A final answer (no tool calls).
    #[must_use]
    pub fn answer(message: Value) -> Self {
        Self { message, tool_calls: Vec::new() }
    }

    /// An answer asking for tool calls.
    #[must_use]
    pub fn with_tool_calls(message: Value, tool_calls: Vec<ToolCall>) -> Self {
        Self { message, tool_calls }
    }

    /// Reads the tool calls of an OpenAI or Ollama chat message
    /// (`tool_calls[].{id, function: {name, arguments}}`; arguments given as a JSON string are
    /// parsed).
    ///
    /// # Errors
    /// An [`LlmError`] of class [`FailureClass::InvalidOutput`] when `tool_calls` is not an array
    /// or a call has no function name.
    pub fn from_message(message: Value) -> Result<Self, LlmError> {
        let invalid = |what: String| LlmError::new(FailureClass::InvalidOutput, what);
        let calls = match message.get("tool_calls") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(calls)) => calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    let function = call.get("function").unwrap_or(call);
                    let name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("tool call {index} has no function name")))?;
                    let arguments = match function.get("arguments") {
                        Some(Value::String(text)) => {
                            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                        }
                        Some(arguments) => arguments.clone(),
                        None => Value::Object(Map::new()),
                    };
                    let id = call.get("id").and_then(Value::as_str).map(str::to_owned);
                    Ok(ToolCall { id, name: name.to_owned(), arguments })
                })
                .collect::<Result<_, LlmError>>()?,
            Some(_) => return Err(invalid("tool_calls is not an array".into())),
        };
        Ok(Self { message, tool_calls: calls })
    }
}

/// The caller's side of an agent loop: how to call the model and the tools.
///
/// Implement the methods with `async fn`; the futures must be `Send`.
pub trait Agent: Send + Sync {
    /// Calls the model with the history so far (iteration `iteration`, 0-based). Return a
    /// [`StepError::Llm`] for a failed call (`?` converts an [`LlmError`], a
    /// [`FailureClass`], a [`std::io::Error`] or a `keel_breaker::Rejected`), or a
    /// [`StepError::Iteration`] to give up on the run.
    fn llm(&self, iteration: u32, history: &[Value]) -> impl Future<Output = Result<LlmTurn, StepError>> + Send;

    /// Runs one tool call and returns its result (the content of the tool message).
    /// `idempotency_key` (`{run_id}:{iteration}:{index}`) is stable across resumes: pass it on
    /// to external systems that deduplicate (payments, emails).
    fn tool(&self, call: &ToolCall, idempotency_key: &str) -> impl Future<Output = Result<String, ToolError>> + Send;

    /// The history a run starts with: by default an array of messages is taken as is, an object
    /// with a `role` is one message, anything else becomes one `user` message (a string as its
    /// text, other values as JSON text).
    fn initial_history(&self, input: &Value) -> Vec<Value> {
        match input {
            Value::Array(messages) => messages.clone(),
            Value::Object(message) if message.contains_key("role") => vec![input.clone()],
            Value::String(text) => vec![json!({"role": "user", "content": text})],
            other => vec![json!({"role": "user", "content": other.to_string()})],
        }
    }

    /// The history message carrying a tool's result: by default
    /// `{"role": "tool", "content": result, "tool_call_id": id}` (OpenAI) when the call has an
    /// id, `{"role": "tool", "content": result, "tool_name": name}` (Ollama) otherwise.
    fn tool_message(&self, call: &ToolCall, result: &str) -> Value {
        match &call.id {
            Some(id) => json!({"role": "tool", "content": result, "tool_call_id": id}),
            None => json!({"role": "tool", "content": result, "tool_name": call.name}),
        }
    }
}

/// A finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The final assistant message (the last model answer, which asked for no tool calls).
    pub output: Value,
    /// The final checkpoint (saved; its run is marked finished in the store).
    pub checkpoint: Checkpoint,
}

/// Why a run stopped before finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A step failed; `checkpoint` (saved in the store) has its failure point and resumes the run.
    #[error("run '{}' failed in iteration {} ({}): {error}", checkpoint.run_id, checkpoint.failure_point.as_ref().map_or(0, |point| point.iteration), error.phase())]
    Step {
        /// What failed.
        error: StepError,
        /// The saved checkpoint.
        checkpoint: Box<Checkpoint>,
    },
    /// The checkpoint store failed. `checkpoint`, when present, is where the run stood (phase
    /// [`Phase::Unknown`] if the store failed mid-iteration, or the step's phase if saving a
    /// step failure failed); it may not be saved, but the last saved one resumes the run too.
    #[error("checkpoint store failed: {error}")]
    Store {
        /// The store's error.
        error: StoreError,
        /// Where the run stood, if it had started.
        checkpoint: Option<Box<Checkpoint>>,
    },
    /// The checkpoint has a format version this version cannot resume.
    #[error("checkpoint format version {version} is not supported (this keel-agent writes {CHECKPOINT_VERSION})")]
    UnsupportedVersion {
        /// The checkpoint's version.
        version: u32,
    },
}

impl RunError {
    /// The checkpoint to resume from, when there is one.
    #[must_use]
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            Self::Step { checkpoint, .. } => Some(checkpoint),
            Self::Store { checkpoint, .. } => checkpoint.as_deref(),
            Self::UnsupportedVersion { .. } => None,
        }
    }

    /// Where the run failed, when known.
    #[must_use]
    pub fn failure_point(&self) -> Option<&FailurePoint> {
        self.checkpoint().and_then(|checkpoint| checkpoint.failure_point.as_ref())
    }

    fn store(error: StoreError, checkpoint: Option<Checkpoint>) -> Self {
        Self::Store { error, checkpoint: checkpoint.map(Box::new) }
    }
}

/// Why an iteration stopped.
enum Stop {
    Step(StepError),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// An agent loop with run checkpoints and a tool-call ledger.
///
/// Each iteration calls the model ([`Agent::llm`]) with the history, then every tool it asked
/// for ([`Agent::tool`], in order), and ends the run when the model asked for none. Around that:
///
/// - [`AgentRun::start`] saves a checkpoint before the first model call, so even a first call
///   that fails leaves one (`last_completed_iteration: null`, failure in iteration 0).
/// - The model's answer and each tool's result are recorded in the run's ledger (appended with
///   the idempotency keys `{run_id}:{iteration}:llm` and `{run_id}:{iteration}:{index}`) before
///   the run goes on.
/// - After each completed iteration the checkpoint is saved; a failure saves it with its
///   [`FailurePoint`] and returns [`RunError::Step`].
/// - [`AgentRun::resume`] continues from `last_completed_iteration + 1` with the checkpoint's
///   history; in the iteration that failed, the recorded model answer and the recorded tool
///   results are reused, so a tool that completed before the failure does not run again.
#[derive(Debug)]
pub struct AgentRun<A> {
    agent: A,
    checkpoints: CheckpointStore,
    max_iterations: u32,
}

/// Counter of agent runs resumed from a checkpoint (in the process that runs the agents).
pub const RESUMES_METRIC: &str = "keel_checkpoint_resumes_total";

impl<A: Agent> AgentRun<A> {
    /// A loop driving `agent`, checkpointing to `checkpoints`, with at most
    /// [`DEFAULT_MAX_ITERATIONS`] iterations.
    #[must_use]
    pub fn new(agent: A, checkpoints: CheckpointStore) -> Self {
        // The series exists from the first loop on, so alerts on resumes can be written.
        metrics::counter!(RESUMES_METRIC).increment(0);
        Self { agent, checkpoints, max_iterations: DEFAULT_MAX_ITERATIONS }
    }

    /// Sets the iteration limit (counted over the whole run, resumes included): reaching it is a
    /// [`StepError::Iteration`] failure, which a loop with a higher limit can resume.
    #[must_use]
    pub fn max_iterations(mut self, max_iterations: u32) -> Self {
        self.max_iterations = max_iterations;
        self
    }

    /// The agent.
    #[must_use]
    pub fn agent(&self) -> &A {
        &self.agent
    }

    /// The checkpoint store.
    #[must_use]
    pub fn checkpoints(&self) -> &CheckpointStore {
        &self.checkpoints
    }

    /// Starts run `run_id` on `input` (history from [`Agent::initial_history`]).
    ///
    /// # Errors
    /// [`RunError::Step`] with the saved checkpoint when a step fails; [`RunError::Store`] when
    /// the store fails, the run id is invalid (1 to 200 bytes, no control characters) or taken
    /// ([`StoreError::SessionExists`]: load and resume it instead).
    pub async fn start(&self, run_id: impl Into<String>, input: Value) -> Result<RunOutcome, RunError> {
        let run_id = run_id.into();
        check_run_id(&run_id).map_err(|err| RunError::store(err, None))?;
        let history = self.agent.initial_history(&input);
        let checkpoint = Checkpoint::new(run_id, input, history);
        self.checkpoints.create(&checkpoint).await.map_err(|err| RunError::store(err, None))?;
        tracing::info!(target: "keel_agent", run_id = %checkpoint.run_id, "agent run started");
        self.drive(checkpoint).await
    }

    /// Continues a run from `checkpoint` (from [`CheckpointStore::load`], a [`RunError`], or
    /// JSON kept elsewhere): iteration `last_completed_iteration + 1` onwards. A run the store
    /// marks finished is not run again: its outcome comes back from its stored final checkpoint.
    ///
    /// # Errors
    /// As [`AgentRun::start`], and [`RunError::UnsupportedVersion`] for a checkpoint of another
    /// format version.
    pub async fn resume(&self, checkpoint: Checkpoint) -> Result<RunOutcome, RunError> {
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(RunError::UnsupportedVersion { version: checkpoint.version });
        }
        check_run_id(&checkpoint.run_id).map_err(|err| RunError::store(err, None))?;
        let known = match self.checkpoints.status(&checkpoint.run_id).await {
            Ok(status) => status,
            Err(err) => return Err(RunError::store(err, Some(checkpoint))),
        };
        match known {
            // Finished: the stored final checkpoint (the one passed in may be older) is the outcome.
            Some(SessionStatus::Ended) => {
                let stored = match self.checkpoints.load(&checkpoint.run_id).await {
                    Ok(stored) => stored.unwrap_or(checkpoint),
                    Err(err) => return Err(RunError::store(err, Some(checkpoint))),
                };
                let output = stored.history.last().cloned().unwrap_or(Value::Null);
                return Ok(RunOutcome { output, checkpoint: stored });
            }
            Some(_) => {}
            // A checkpoint kept elsewhere, resumed into a store that never saw the run.
            None => match self.checkpoints.create(&checkpoint).await {
                Ok(()) | Err(StoreError::SessionExists { .. }) => {}
                Err(err) => return Err(RunError::store(err, Some(checkpoint))),
            },
        }
        tracing::info!(
            target: "keel_agent",
            run_id = %checkpoint.run_id,
            iteration = checkpoint.next_iteration(),
            "agent run resumed"
        );
        metrics::counter!(RESUMES_METRIC).increment(1);
        self.drive(checkpoint).await
    }

    /// Runs iterations from the checkpoint's next one until the run finishes or fails.
    async fn drive(&self, mut checkpoint: Checkpoint) -> Result<RunOutcome, RunError> {
        checkpoint.failure_point = None;
        loop {
            let iteration = checkpoint.next_iteration();
            if iteration >= self.max_iterations {
                let error = StepError::Iteration(format!("reached the limit of {} iterations", self.max_iterations));
                return Err(self.fail(checkpoint, iteration, error).await);
            }
            let (added, done) = match self.iteration(&checkpoint, iteration).await {
                Ok(step) => step,
                Err(Stop::Step(error)) => return Err(self.fail(checkpoint, iteration, error).await),
                Err(Stop::Store(error)) => {
                    tracing::warn!(target: "keel_agent", run_id = %checkpoint.run_id, iteration, %error, "agent run: checkpoint store failed");
                    checkpoint.failure_point = Some(FailurePoint {
                        iteration,
                        phase: Phase::Unknown,
                        kind: "store".into(),
                        message: error.to_string(),
                    });
                    checkpoint.checkpointed_at = now_millis();
                    return Err(RunError::store(error, Some(checkpoint)));
                }
            };
            checkpoint.history.extend(added);
            checkpoint.last_completed_iteration = Some(iteration);
            checkpoint.checkpointed_at = now_millis();
            if done {
                if let Err(error) = self.checkpoints.finish(&checkpoint).await {
                    return Err(RunError::store(error, Some(checkpoint)));
                }
                tracing::info!(target: "keel_agent", run_id = %checkpoint.run_id, iteration, "agent run finished");
                let output = checkpoint.history.last().cloned().unwrap_or(Value::Null);
                return Ok(RunOutcome { output, checkpoint });
            }
            if let Err(error) = self.checkpoints.save(&checkpoint).await {
                return Err(RunError::store(error, Some(checkpoint)));
            }
        }
    }

    /// One iteration: the messages it adds to the history, and whether the run is done.
    async fn iteration(&self, checkpoint: &Checkpoint, iteration: u32) -> Result<(Vec<Value>, bool), Stop> {
        let run_id = checkpoint.run_id.as_str();
        let llm_key = format!("{run_id}:{iteration}:llm");
        let turn = match self.checkpoints.recorded(run_id, &llm_key).await? {
            Some(entry) => {
                tracing::debug!(target: "keel_agent", run_id, iteration, "agent run: model answer replayed from the ledger");
                self.decode_turn(&entry)?
            }
            None => {
                let turn = self.agent.llm(iteration, &checkpoint.history).await.map_err(Stop::Step)?;
                let entry = NewMessage::assistant(self.encode(&turn.message)?)
                    .with_tool_calls(serde_json::to_value(&turn.tool_calls).map_err(|err| self.unserializable(&err))?)
                    .with_idempotency_key(llm_key);
                // The first recorded answer wins (a concurrent driver of the same run).
                self.decode_turn(&self.checkpoints.record(run_id, entry).await?)?
            }
        };
        let mut added = Vec::with_capacity(turn.tool_calls.len() + 1);
        added.push(turn.message.clone());
        for (index, call) in turn.tool_calls.iter().enumerate() {
            let key = format!("{run_id}:{iteration}:{index}");
            let result = match self.checkpoints.recorded(run_id, &key).await? {
                Some(entry) => {
                    tracing::debug!(target: "keel_agent", run_id, iteration, tool = %call.name, "agent run: tool result replayed from the ledger");
                    entry.content
                }
                None => {
                    let result =
                        self.agent.tool(call, &key).await.map_err(|err| {
                            Stop::Step(StepError::Tool { name: call.name.clone(), message: err.message })
                        })?;
                    let entry =
                        NewMessage::new("tool", result).with_tool_calls(json!([call])).with_idempotency_key(key);
                    self.checkpoints.record(run_id, entry).await?.content
                }
            };
            added.push(self.agent.tool_message(call, &result));
        }
        Ok((added, turn.tool_calls.is_empty()))
    }

    /// Saves the checkpoint of a failed step and builds the error.
    async fn fail(&self, mut checkpoint: Checkpoint, iteration: u32, error: StepError) -> RunError {
        tracing::warn!(
            target: "keel_agent",
            run_id = %checkpoint.run_id,
            iteration,
            phase = %error.phase(),
            kind = error.kind(),
            %error,
            "agent run failed; checkpoint saved"
        );
        checkpoint.failure_point = Some(FailurePoint::from_error(iteration, &error));
        checkpoint.checkpointed_at = now_millis();
        match self.checkpoints.save(&checkpoint).await {
            Ok(()) => RunError::Step { error, checkpoint: Box::new(checkpoint) },
            Err(store) => RunError::store(store, Some(checkpoint)),
        }
    }

    fn encode(&self, message: &Value) -> Result<String, Stop> {
        serde_json::to_string(message).map_err(|err| self.unserializable(&err))
    }

    fn unserializable(&self, err: &serde_json::Error) -> Stop {
        Stop::Store(StoreError::InvalidInput(format!("model answer cannot be serialized: {err}")))
    }

    /// A model answer from its ledger entry.
    fn decode_turn(&self, entry: &Message) -> Result<LlmTurn, Stop> {
        let corrupt = |err: serde_json::Error| {
            Stop::Store(self.checkpoints.corrupt(format!("ledger entry {} of {}: {err}", entry.seq, entry.session_id)))
        };
        let message = serde_json::from_str(&entry.content).map_err(corrupt)?;
        let tool_calls = match &entry.tool_calls {
            Some(calls) => serde_json::from_value(calls.clone()).map_err(corrupt)?,
            None => Vec::new(),
        };
        Ok(LlmTurn { message, tool_calls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_read_from_openai_and_ollama_messages() {
        let openai = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"order\": 7}"}}
        ]});
        let turn = LlmTurn::from_message(openai).unwrap();
        assert_eq!(
            turn.tool_calls,
            vec![ToolCall { id: Some("call_1".into()), name: "lookup".into(), arguments: json!({"order": 7}) }]
        );
        let ollama = json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "charge", "arguments": {"cents": 500}}}
        ]});
        let turn = LlmTurn::from_message(ollama).unwrap();
        assert_eq!(turn.tool_calls[0].arguments, json!({"cents": 500}));
        assert_eq!(turn.tool_calls[0].id, None);
        assert!(LlmTurn::from_message(json!({"role": "assistant", "content": "done"})).unwrap().tool_calls.is_empty());
        let err = LlmTurn::from_message(json!({"tool_calls": [{"function": {}}]})).unwrap_err();
        assert_eq!(err.class(), Some(FailureClass::InvalidOutput));
        assert!(LlmTurn::from_message(json!({"tool_calls": {}})).is_err());
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Run checkpoints end to end on a temporary SQLite store: failures in each phase leave a saved
//! checkpoint, resume continues from the last completed iteration, and the tool-call ledger keeps
//! side-effecting tools from running twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use keel_agent::{
    Agent, AgentRun, CHECKPOINT_VERSION, Checkpoint, CheckpointStore, FailurePoint, LlmError, LlmTurn, Phase, RunError,
    StepError, ToolCall, ToolError,
};
use keel_session::{SessionStatus, StoreError, open};
use keel_types::FailureClass;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A shop assistant: look the order up, charge the card and send a receipt, then answer.
///
/// Iteration 0 asks for `lookup_order`, 1 for `check_stock`, 2 for `charge_card` then
/// `send_receipt`, 3 answers. Counts every model and tool call.
#[derive(Default)]
struct Shop {
    /// While set, every model call fails with it.
    llm_failure: Mutex<Option<StepError>>,
    /// While set, `send_receipt` fails.
    receipt_fails: AtomicBool,
    llm_calls: AtomicU32,
    charges: AtomicU32,
    receipts: AtomicU32,
    /// The idempotency keys the tools were called with.
    keys: Mutex<Vec<String>>,
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall { id: Some(id.into()), name: name.into(), arguments }
}

impl Agent for Shop {
    async fn llm(&self, iteration: u32, history: &[Value]) -> Result<LlmTurn, StepError> {
        if let Some(err) = self.llm_failure.lock().clone() {
            return Err(err);
        }
        self.llm_calls.fetch_add(1, Ordering::SeqCst);
        // The history holds the user message, then per iteration the answer and its tool results.
        let expected = [1, 3, 5, 8][iteration as usize];
        assert_eq!(history.len(), expected, "history of iteration {iteration}: {history:?}");
        let calls = match iteration {
            0 => vec![call("c0", "lookup_order", json!({"order": 7}))],
            1 => vec![call("c1", "check_stock", json!({"sku": "A-1"}))],
            2 => vec![call("c2", "charge_card", json!({"cents": 500})), call("c3", "send_receipt", json!({}))],
            _ => return Ok(LlmTurn::answer(json!({"role": "assistant", "content": "order 7 is paid"}))),
        };
        Ok(LlmTurn::with_tool_calls(json!({"role": "assistant", "content": "", "iteration": iteration}), calls))
    }

    async fn tool(&self, call: &ToolCall, idempotency_key: &str) -> Result<String, ToolError> {
        self.keys.lock().push(idempotency_key.to_owned());
        match call.name.as_str() {
            "lookup_order" => Ok("order 7: 1 x A-1, 5.00".into()),
            "check_stock" => Ok("in stock".into()),
            "charge_card" => {
                let n = self.charges.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(format!("charge #{n} ok"))
            }
            "send_receipt" => {
                if self.receipt_fails.load(Ordering::SeqCst) {
                    return Err(ToolError::new("smtp: connection refused"));
                }
                self.receipts.fetch_add(1, Ordering::SeqCst);
                Ok("sent".into())
            }
            other => Err(format!("unknown tool {other}").into()),
        }
    }
}

/// A SQLite store in its own temporary directory (kept alive by the returned guard) and its URL.
async fn temp_store() -> (tempfile::TempDir, String, CheckpointStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("runs.db").display());
    let store = open(&url).await.unwrap();
    (dir, url, CheckpointStore::new(store))
}

fn step_failure(err: RunError) -> (StepError, Checkpoint) {
    match err {
        RunError::Step { error, checkpoint } => (error, *checkpoint),
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_first_call_leaves_a_checkpoint_before_any_iteration() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let shop = Shop::default();
    *shop.llm_failure.lock() = Some(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
    let run = AgentRun::new(shop, checkpoints.clone());

    let err = run.start("order-7", json!("please pay order 7")).await.unwrap_err();
    assert_eq!(err.failure_point().unwrap().phase, Phase::Llm);
    let (error, checkpoint) = step_failure(err);
    assert_eq!(error.class(), Some(FailureClass::Refused));
    assert_eq!(checkpoint.last_completed_iteration, None);
    assert_eq!(
        checkpoint.failure_point,
        Some(FailurePoint { iteration: 0, phase: Phase::Llm, kind: "refused".into(), message: error.to_string() })
    );
    assert_eq!(checkpoint.original_input, json!("please pay order 7"));
    assert_eq!(checkpoint.history, vec![json!({"role": "user", "content": "please pay order 7"})]);
    assert_eq!(checkpoints.load("order-7").await.unwrap(), Some(checkpoint));
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 0);

    // The model server is back: resuming runs the whole loop.
    *run.agent().llm_failure.lock() = None;
    let checkpoint = checkpoints.load("order-7").await.unwrap().unwrap();
    let outcome = run.resume(checkpoint).await.unwrap();
    assert_eq!(outcome.output["content"], "order 7 is paid");
    assert_eq!(outcome.checkpoint.last_completed_iteration, Some(3));
}

#[tokio::test]
async fn a_tool_failure_resumes_without_running_completed_tools_again() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let shop = Shop::default();
    shop.receipt_fails.store(true, Ordering::SeqCst);
    let run = AgentRun::new(shop, checkpoints.clone());

    let (error, checkpoint) = step_failure(run.start("order-7", json!("pay order 7")).await.unwrap_err());
    assert_eq!(error, StepError::Tool { name: "send_receipt".into(), message: "smtp: connection refused".into() });
    assert_eq!(checkpoint.last_completed_iteration, Some(1));
    let point = checkpoint.failure_point.clone().unwrap();
    assert_eq!((point.iteration, point.phase, point.kind.as_str()), (2, Phase::Tool, "tool_error"));
    // The history stops after the last completed iteration: user, 2 × (answer, tool result).
    assert_eq!(checkpoint.history.len(), 5);
    assert_eq!(run.agent().charges.load(Ordering::SeqCst), 1);
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 3);

    // The card was charged and recorded in the ledger before the receipt failed.
    let store = checkpoints.store();
    let charged = store.message_by_key("run:order-7", "order-7:2:0").await.unwrap().unwrap();
    assert_eq!((charged.role.as_str(), charged.content.as_str()), ("tool", "charge #1 ok"));
    assert_eq!(store.message_by_key("run:order-7", "order-7:2:1").await.unwrap(), None);

    run.agent().receipt_fails.store(false, Ordering::SeqCst);
    let outcome = run.resume(checkpoints.load("order-7").await.unwrap().unwrap()).await.unwrap();
    assert_eq!(outcome.output, json!({"role": "assistant", "content": "order 7 is paid"}));
    assert_eq!(run.agent().charges.load(Ordering::SeqCst), 1, "the card is charged once");
    assert_eq!(run.agent().receipts.load(Ordering::SeqCst), 1);
    // Iteration 2's answer came from the ledger; only iteration 3 called the model again.
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        *run.agent().keys.lock(),
        ["order-7:0:0", "order-7:1:0", "order-7:2:0", "order-7:2:1", "order-7:2:1"].map(String::from)
    );

    let history = &outcome.checkpoint.history;
    let roles: Vec<&str> = history.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "tool", "assistant"]);
    assert_eq!(history[6], json!({"role": "tool", "content": "charge #1 ok", "tool_call_id": "c2"}));
    assert_eq!(outcome.checkpoint.failure_point, None);
    assert_eq!(outcome.checkpoint.last_completed_iteration, Some(3));
    assert_eq!(checkpoints.load("order-7").await.unwrap(), Some(outcome.checkpoint.clone()));
    let session = store.get_session("run:order-7").await.unwrap().unwrap();
    assert_eq!(session.status, SessionStatus::Ended);
    // Ledger: 4 model answers, 4 tool results (the failed receipt recorded nothing).
    assert_eq!(session.message_count, 8);

    // Resuming a finished run, even from an old checkpoint, returns its outcome and calls nothing.
    let again = run.resume(outcome.checkpoint.clone()).await.unwrap();
    assert_eq!(again, outcome);
    let again = run.resume(checkpoint).await.unwrap();
    assert_eq!(again, outcome);
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn model_not_found_and_circuit_open_fail_in_the_llm_phase() {
    let cases = [
        (StepError::from(LlmError::from_status(404, "model 'llama9' not found").unwrap()), "model_not_found"),
        (StepError::from(FailureClass::Busy), "busy"),
        (StepError::from(LlmError::circuit_open(None, "breaker open")), "circuit_open"),
        (
            keel_breaker::Rejected {
                state: keel_breaker::State::Open,
                forced: true,
                retry_after: std::time::Duration::from_secs(30),
            }
            .into(),
            "circuit_open",
        ),
    ];
    let (_dir, _url, checkpoints) = temp_store().await;
    for (index, (failure, kind)) in cases.into_iter().enumerate() {
        let shop = Shop::default();
        *shop.llm_failure.lock() = Some(failure.clone());
        let run = AgentRun::new(shop, checkpoints.clone());
        let run_id = format!("run-{index}");
        let (error, checkpoint) = step_failure(run.start(run_id.as_str(), json!("hi")).await.unwrap_err());
        assert_eq!(error, failure);
        let point = checkpoint.failure_point.unwrap();
        assert_eq!((point.iteration, point.phase, point.kind.as_str()), (0, Phase::Llm, kind));
        let stored = checkpoints.load(&run_id).await.unwrap().unwrap();
        assert_eq!(stored.failure_point.unwrap().kind, kind);
    }
}

#[tokio::test]
async fn an_iteration_error_and_the_iteration_limit_fail_in_the_iteration_phase() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let shop = Shop::default();
    *shop.llm_failure.lock() = Some(StepError::Iteration("the agent gave up".into()));
    let run = AgentRun::new(shop, checkpoints.clone());
    let (_, checkpoint) = step_failure(run.start("gave-up", json!("hi")).await.unwrap_err());
    assert_eq!(checkpoint.failure_point.unwrap().phase, Phase::Iteration);

    let run = AgentRun::new(Shop::default(), checkpoints.clone()).max_iterations(2);
    let (error, checkpoint) = step_failure(run.start("long", json!("hi")).await.unwrap_err());
    assert!(matches!(error, StepError::Iteration(_)), "{error:?}");
    assert_eq!(checkpoint.last_completed_iteration, Some(1));
    let point = checkpoint.failure_point.clone().unwrap();
    assert_eq!((point.iteration, point.phase, point.kind.as_str()), (2, Phase::Iteration, "iteration_error"));

    // A loop with a higher limit picks the run up where it stopped.
    let run = AgentRun::new(Shop::default(), checkpoints.clone()).max_iterations(10);
    let outcome = run.resume(checkpoint).await.unwrap();
    assert_eq!(outcome.checkpoint.last_completed_iteration, Some(3));
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reopened_store_still_loads_the_checkpoint_and_resumes() {
    let (_dir, url, checkpoints) = temp_store().await;
    let shop = Shop::default();
    shop.receipt_fails.store(true, Ordering::SeqCst);
    let run = AgentRun::new(shop, checkpoints);
    let (_, failed) = step_failure(run.start("restart", json!("pay")).await.unwrap_err());
    assert_eq!(run.agent().charges.load(Ordering::SeqCst), 1);
    drop(run);

    // A new process: a new store on the same file, a new agent with fresh counters.
    let checkpoints = CheckpointStore::new(open(&url).await.unwrap());
    let loaded = checkpoints.load("restart").await.unwrap().unwrap();
    assert_eq!(loaded, failed);
    let run = AgentRun::new(Shop::default(), checkpoints);
    let outcome = run.resume(loaded).await.unwrap();
    assert_eq!(outcome.output["content"], "order 7 is paid");
    assert_eq!(run.agent().charges.load(Ordering::SeqCst), 0, "the charge before the restart is not repeated");
    assert_eq!(run.agent().receipts.load(Ordering::SeqCst), 1);
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn runs_are_send_and_can_be_spawned() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let run = Arc::new(AgentRun::new(Shop::default(), checkpoints));
    let spawned = Arc::clone(&run);
    let outcome = tokio::spawn(async move { spawned.start("spawned", json!("hi")).await }).await.unwrap().unwrap();
    assert_eq!(outcome.checkpoint.run_id, "spawned");
    assert_eq!(run.agent().llm_calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_checkpoint_kept_outside_the_store_resumes_into_it() {
    let (_dir, _url, checkpoints) = temp_store().await;
    // Carried as JSON (a file, a queue message) to a store that never saw the run.
    let json =
        serde_json::to_string(&Checkpoint::new("elsewhere", json!("hi"), vec![json!({"role": "user"})])).unwrap();
    let checkpoint: Checkpoint = serde_json::from_str(&json).unwrap();
    let run = AgentRun::new(Shop::default(), checkpoints.clone());
    let outcome = run.resume(checkpoint).await.unwrap();
    assert_eq!(outcome.checkpoint.last_completed_iteration, Some(3));
    assert!(checkpoints.is_finished("elsewhere").await.unwrap());
}

#[tokio::test]
async fn run_ids_are_unique_and_checked_and_versions_are_checked() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let run = AgentRun::new(Shop::default(), checkpoints.clone());
    run.start("once", json!("hi")).await.unwrap();
    let err = run.start("once", json!("hi")).await.unwrap_err();
    assert!(matches!(err, RunError::Store { error: StoreError::SessionExists { .. }, checkpoint: None }), "{err:?}");
    let err = run.start("", json!("hi")).await.unwrap_err();
    assert!(matches!(err, RunError::Store { error: StoreError::InvalidInput(_), .. }), "{err:?}");
    assert_eq!(checkpoints.load("never-started").await.unwrap(), None);

    let mut future = Checkpoint::new("future", json!("hi"), vec![]);
    future.version = CHECKPOINT_VERSION + 1;
    let err = run.resume(future.clone()).await.unwrap_err();
    assert!(matches!(err, RunError::UnsupportedVersion { version: 2 }), "{err:?}");
    assert!(err.checkpoint().is_none());
    checkpoints.save(&future).await.unwrap();
    assert!(matches!(checkpoints.load("future").await, Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn saving_keeps_other_metadata_and_survives_version_moves() {
    let (_dir, _url, checkpoints) = temp_store().await;
    let store = Arc::clone(checkpoints.store());
    store
        .create_session(keel_session::NewSession::new("run:meta").with_metadata(json!({"owner_note": "keep me"})))
        .await
        .unwrap();
    store.append("run:meta", keel_session::NewMessage::user("bumps the version")).await.unwrap();
    let checkpoint = Checkpoint::new("meta", json!(1), vec![]);
    checkpoints.save(&checkpoint).await.unwrap();
    let session = store.get_session("run:meta").await.unwrap().unwrap();
    assert_eq!(session.metadata["owner_note"], "keep me");
    assert_eq!(checkpoints.load("meta").await.unwrap(), Some(checkpoint));
}

#[test]
fn checkpoint_json_has_the_documented_fields_and_round_trips() {
    let checkpoint = Checkpoint {
        version: CHECKPOINT_VERSION,
        run_id: "order-7".into(),
        history: vec![
            json!({"role": "user", "content": "pay order 7"}),
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c0", "function": {"name": "lookup_order", "arguments": "{}"}}]}),
            json!({"role": "tool", "content": "order 7: 5.00", "tool_call_id": "c0"}),
        ],
        last_completed_iteration: Some(0),
        original_input: json!("pay order 7"),
        checkpointed_at: 1_700_000_000_123,
        failure_point: Some(FailurePoint {
            iteration: 1,
            phase: Phase::Llm,
            kind: "refused".into(),
            message: "model call failed (refused): connection refused".into(),
        }),
    };
    let value = serde_json::to_value(&checkpoint).unwrap();
    let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "version",
            "run_id",
            "history",
            "last_completed_iteration",
            "original_input",
            "checkpointed_at",
            "failure_point"
        ]
    );
    let point: Vec<&str> = value["failure_point"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(point, ["iteration", "phase", "kind", "message"]);
    assert_eq!(serde_json::from_value::<Checkpoint>(value).unwrap(), checkpoint);
    insta::assert_json_snapshot!("checkpoint", checkpoint);

    let fresh = serde_json::to_value(Checkpoint::new("r", Value::Null, vec![])).unwrap();
    assert_eq!(fresh["last_completed_iteration"], Value::Null);
    assert_eq!(fresh["failure_point"], Value::Null);
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! The typed API: the schema comes from the Rust type (schemars), the same pipeline runs.

use keel_repair::{RepairError, Repairer, Strategy, repair};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Priority {
    Low,
    High,
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Customer {
    name: String,
    email: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Ticket {
    id: u64,
    priority: Priority,
    tags: Vec<String>,
    customer: Customer,
    escalate: bool,
    note: Option<String>,
}

#[test]
fn typed_repair_coerces_into_the_type() {
    let raw = "<think>they want a ticket</think>\n```json\n{'ID': '42', priority: 'HIGH', tags: 'vip', \
               customer: \"{\\\"name\\\": \\\"Ada\\\"}\", escalate: 'false',}\n```";
    let (ticket, report) = repair::<Ticket>(raw).unwrap();
    assert_eq!(
        ticket,
        Ticket {
            id: 42,
            priority: Priority::High,
            tags: vec!["vip".into()],
            customer: Customer { name: "Ada".into(), email: None },
            escalate: false,
            note: None,
        }
    );
    for strategy in [Strategy::KeyMatch, Strategy::EnumCase, Strategy::WrapArray, Strategy::ParseStringified] {
        assert!(report.has(strategy), "{strategy} missing from {report}");
    }
}

#[test]
fn typed_repair_refuses_missing_fields() {
    let err = repair::<Ticket>(r#"{"id": 1, "priority": "low", "tags": [], "escalate": true}"#).unwrap_err();
    assert!(
        matches!(&err, RepairError::Schema { reasons } if reasons.iter().any(|r| r.contains("\"customer\""))),
        "{err}"
    );
    let err =
        repair::<Ticket>(r#"{"id": -1, "priority": "low", "tags": [], "customer": {"name": "x"}, "escalate": true}"#)
            .unwrap_err();
    assert_eq!(err.kind(), "schema", "{err}");
}

#[test]
fn engine_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Repairer>();
    let repairer = Repairer::new();
    let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    std::thread::scope(|scope| {
        for i in 0..4 {
            let repairer = repairer.clone();
            let schema = &schema;
            scope.spawn(move || {
                for j in 0..50 {
                    let text = format!("{{n: '{}'}}", i * 100 + j);
                    let repaired = repairer.repair(&text, Some(schema)).unwrap();
                    assert_eq!(repaired.value()["n"], i * 100 + j);
                }
            });
        }
    });
    assert_eq!(repairer.cache().len(), 1);
}

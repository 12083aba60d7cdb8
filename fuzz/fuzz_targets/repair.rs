//! Any bytes: the repair engine must not panic, must finish, and whatever it returns must be
//! strict JSON; with a schema, the value must also be valid against it.
#![no_main]

use std::sync::LazyLock;

use keel_repair::{CompiledSchema, Repairer};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static REPAIRER: LazyLock<Repairer> = LazyLock::new(Repairer::new);
static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "kind": {"enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["name"],
        "additionalProperties": false
    })
});

fuzz_target!(|data: &[u8]| {
    if let Ok(repaired) = REPAIRER.repair_bytes(data, None) {
        assert!(serde_json::from_str::<Value>(repaired.text()).is_ok());
    }
    if let Ok(repaired) = REPAIRER.repair_bytes(data, Some(&SCHEMA)) {
        let value: Value = serde_json::from_str(repaired.text()).expect("strict JSON");
        let compiled = CompiledSchema::compile(&SCHEMA).expect("schema compiles");
        assert!(compiled.is_valid(&value), "{value}");
    }
    let _ = keel_repair::partial(&String::from_utf8_lossy(data));
});

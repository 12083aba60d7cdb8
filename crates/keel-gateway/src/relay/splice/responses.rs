//! Splicing a continuation's OpenAI Responses stream into the stream it continues, so that the
//! client sees one response: the continuation's `response.created` and `response.in_progress`
//! are dropped, and so are the `response.output_item.added` and `response.content_part.added` of
//! its first message item when the broken stream left a message item open: that item's events
//! then carry the open item's `item_id`, `output_index` and `content_index`, and its `.done`
//! events (and the final response) the whole text, the broken stream's and the continuation's.
//! Other items are numbered after the items already sent; every event's `sequence_number`
//! follows on from the broken stream's last one.

use keel_upstream::translate::responses::with_output_text;
use serde_json::Value;

use crate::relay::tap::{OpenItem, ResponseSeen};

/// What the splice knows of the broken stream and has seen of the continuation.
pub(super) struct Continued {
    /// What the broken stream sent.
    seen: ResponseSeen,
    /// The `sequence_number` the next event gets.
    next_sequence: u64,
    /// The continuation's `output_index`es and the ones the client sees them as.
    indexes: Vec<(u64, u64)>,
    /// The `output_index` the next new item gets.
    next_output: u64,
    /// The id of the continuation's item that continues the open one, once it was added.
    joined: Option<String>,
    /// The text of that item's deltas.
    text: String,
}

impl Continued {
    /// A splice after a stream that sent `seen`.
    pub(super) fn new(seen: ResponseSeen) -> Continued {
        let next_sequence = seen.last_sequence.map_or(0, |last| last + 1);
        let next_output = seen.next_output;
        Continued { seen, next_sequence, indexes: Vec::new(), next_output, joined: None, text: String::new() }
    }

    /// Fits one event of kind `kind` into the client's stream; `false` when it is dropped.
    pub(super) fn map(&mut self, kind: &str, value: &mut Value) -> bool {
        match kind {
            "response.created" | "response.in_progress" => return false,
            "response.output_item.added" if self.joins(value) => return false,
            _ => {}
        }
        let joined = self.is_joined(value);
        if kind == "response.content_part.added" && joined {
            return false;
        }
        if kind == "response.output_text.delta" && joined {
            self.text.push_str(value.get("delta").and_then(Value::as_str).unwrap_or_default());
        }
        self.place(value, joined);
        self.complete(kind, value, joined);
        if let Some(object) = value.as_object_mut() {
            object.insert("sequence_number".into(), Value::from(self.next_sequence));
            self.next_sequence += 1;
        }
        true
    }

    /// Whether `added` adds the continuation's first message item while the broken stream's is
    /// open: it is noted as continuing the open one.
    fn joins(&mut self, added: &Value) -> bool {
        let Some(open) = &self.seen.open else { return false };
        let is_message = added.pointer("/item/type").and_then(Value::as_str) == Some("message");
        let id = added.pointer("/item/id").and_then(Value::as_str);
        let (Some(id), Some(index), true, None) =
            (id, added.get("output_index").and_then(Value::as_u64), is_message, &self.joined)
        else {
            return false;
        };
        self.indexes.push((index, open.output_index));
        self.joined = Some(id.to_owned());
        true
    }

    /// Whether an event is about the continuation's item that continues the open one.
    fn is_joined(&self, value: &Value) -> bool {
        let id = value.get("item_id").or_else(|| value.pointer("/item/id")).and_then(Value::as_str);
        self.joined.is_some() && id == self.joined.as_deref()
    }

    /// The open item the continuation writes into, once it does.
    fn open(&self) -> Option<&OpenItem> {
        self.joined.as_ref().and(self.seen.open.as_ref())
    }

    /// Renumbers an event's `output_index` (and of the joined item, its ids).
    fn place(&mut self, value: &mut Value, joined: bool) {
        let Some(index) = value.get("output_index").and_then(Value::as_u64) else { return };
        let placed = self.output_index(index);
        let open = self.open().filter(|_| joined).cloned();
        let Some(object) = value.as_object_mut() else { return };
        object.insert("output_index".into(), Value::from(placed));
        if let Some(open) = open {
            if object.contains_key("item_id") {
                object.insert("item_id".into(), Value::from(open.item_id));
            }
            if object.contains_key("content_index") {
                object.insert("content_index".into(), Value::from(open.content_index));
            }
        }
    }

    /// The client's `output_index` for the continuation's `index`: a new one for a new item.
    fn output_index(&mut self, index: u64) -> u64 {
        if let Some((_, placed)) = self.indexes.iter().find(|(seen, _)| *seen == index) {
            return *placed;
        }
        let placed = self.next_output;
        self.next_output += 1;
        self.indexes.push((index, placed));
        placed
    }

    /// The whole text of the joined item: the broken stream's and the continuation's.
    fn whole(&self) -> Option<String> {
        self.open().map(|open| format!("{}{}", open.text, self.text))
    }

    /// In the events that end the joined item or the response, the whole text.
    fn complete(&self, kind: &str, value: &mut Value, joined: bool) {
        let Some(whole) = self.whole() else {
            if is_final(kind) {
                self.complete_response(value, None);
            }
            return;
        };
        match kind {
            "response.output_text.done" if joined => set(value, "text", &whole),
            "response.content_part.done" if joined => {
                if let Some(part) = value.get_mut("part") {
                    set(part, "text", &whole);
                }
            }
            "response.output_item.done" if joined => {
                if let Some(item) = value.get_mut("item") {
                    self.fix_item(item, &whole);
                }
            }
            _ if is_final(kind) => self.complete_response(value, Some(&whole)),
            _ => {}
        }
    }

    /// The final response: the broken stream's id, its items done before, the whole text.
    fn complete_response(&self, value: &mut Value, whole: Option<&str>) {
        let Some(response) = value.get_mut("response") else { return };
        if let Some(whole) = whole {
            let items = response.get_mut("output").and_then(Value::as_array_mut);
            let item = items.and_then(|items| items.iter_mut().find(|item| self.is_joined_item(item)));
            match item {
                Some(item) => self.fix_item(item, whole),
                None => *response = with_output_text(response, whole),
            }
        }
        if let Some(id) = &self.seen.id {
            set(response, "id", id);
        }
        if let Some(output) = response.get_mut("output").and_then(Value::as_array_mut) {
            output.splice(0..0, self.seen.done_items.iter().cloned());
        }
    }

    /// Whether an output item is the continuation's joined one.
    fn is_joined_item(&self, item: &Value) -> bool {
        self.joined.is_some() && item.get("id").and_then(Value::as_str) == self.joined.as_deref()
    }

    /// The joined item as the client knows it: the open item's id, the whole text.
    fn fix_item(&self, item: &mut Value, whole: &str) {
        if let Some(open) = self.open() {
            set(item, "id", &open.item_id);
        }
        let parts = item.get_mut("content").and_then(Value::as_array_mut).into_iter().flatten();
        let mut texts = parts.filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"));
        if let Some(part) = texts.next() {
            set(part, "text", whole);
        }
    }
}

/// Whether an event of kind `kind` ends the response (and carries it).
fn is_final(kind: &str) -> bool {
    matches!(kind, "response.completed" | "response.incomplete" | "response.failed")
}

/// Sets a string field of an object.
fn set(value: &mut Value, key: &str, text: &str) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.into(), Value::from(text));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Splice;
    use super::super::tests::{event, parsed, run};
    use crate::relay::tap::{Tap, TapFraming};

    use super::*;

    /// One Responses event, numbered `sequence`.
    fn numbered(mut data: Value, sequence: u64) -> String {
        data["sequence_number"] = json!(sequence);
        event(data["type"].as_str().unwrap(), &data.to_string())
    }

    /// The start of a stream whose message item `item` writes `deltas`.
    fn start(response: &str, item: &str, deltas: &[&str]) -> Vec<Value> {
        let mut events = vec![
            json!({"type": "response.created", "response": {"id": response, "output": []}}),
            json!({"type": "response.in_progress", "response": {"id": response, "output": []}}),
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": {"type": "message", "id": item, "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": item, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": ""}}),
        ];
        events.extend(deltas.iter().map(|delta| {
            json!({"type": "response.output_text.delta", "item_id": item, "output_index": 0, "content_index": 0,
                   "delta": delta})
        }));
        events
    }

    /// The end of a stream whose message item `item` wrote `text`, then a function call.
    fn end(response: &str, item: &str, text: &str) -> Vec<Value> {
        let message = json!({"type": "message", "id": item, "role": "assistant",
                             "content": [{"type": "output_text", "text": text}]});
        let call = json!({"type": "function_call", "id": "fc_2", "name": "f", "arguments": "{}"});
        vec![
            json!({"type": "response.output_text.done", "item_id": item, "output_index": 0, "content_index": 0,
                   "text": text}),
            json!({"type": "response.content_part.done", "item_id": item, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": text}}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": message}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": call}),
            json!({"type": "response.output_item.done", "output_index": 1, "item": call}),
            json!({"type": "response.completed", "response": {"id": response, "output": [message, call]}}),
        ]
    }

    /// Events as a stream numbered from 0.
    fn stream(events: &[Value]) -> String {
        events.iter().enumerate().map(|(n, e)| numbered(e.clone(), n as u64)).collect()
    }

    /// What a tap saw of `broken`.
    fn seen(broken: &str) -> ResponseSeen {
        let mut tap = Tap::new(TapFraming::Responses);
        tap.feed(broken.as_bytes());
        tap.response
    }

    /// The continuation of "Once upon" (`msg_1` of `resp_1`, two items done before it).
    fn continued() -> (ResponseSeen, String) {
        let mut broken = start("resp_1", "msg_1", &["Once", " upon"]);
        broken[2]["output_index"] = json!(2);
        for event in &mut broken[3..] {
            event["output_index"] = json!(2);
        }
        let reasoning = json!({"type": "reasoning", "id": "rs_1"});
        broken.insert(2, json!({"type": "response.output_item.done", "output_index": 0, "item": reasoning}));
        broken.insert(3, json!({"type": "response.output_item.done", "output_index": 1, "item": reasoning}));
        let mut continuation = start("resp_2", "msg_2", &[" a", " time"]);
        continuation.extend(end("resp_2", "msg_2", " a time"));
        (seen(&stream(&broken)), stream(&continuation))
    }

    #[test]
    fn the_tap_notes_the_open_item() {
        let (seen, _) = continued();
        assert_eq!(seen.id.as_deref(), Some("resp_1"));
        assert_eq!(seen.last_sequence, Some(7));
        assert_eq!((seen.next_output, seen.done_items.len()), (3, 2));
        let open = seen.open.unwrap();
        assert_eq!((open.item_id.as_str(), open.output_index, open.text.as_str()), ("msg_1", 2, "Once upon"));
    }

    #[test]
    fn any_split_gives_the_same_stream() {
        let (seen, continuation) = continued();
        let whole = run(Splice::responses(seen.clone()), &continuation, continuation.len());
        for size in 1..64 {
            assert_eq!(run(Splice::responses(seen.clone()), &continuation, size), whole, "{size}");
        }
    }

    #[test]
    fn the_continuation_writes_into_the_open_item_and_ends_with_the_whole_text() {
        let (seen, continuation) = continued();
        let events = parsed(&run(Splice::responses(seen), &continuation, 7));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let expected = [
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ];
        assert_eq!(kinds, expected);
        let sequences: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(sequences, (8..8 + events.len() as u64).collect::<Vec<_>>());
        for event in &events[..4] {
            assert_eq!((&event["item_id"], &event["output_index"]), (&json!("msg_1"), &json!(2)), "{event}");
        }
        assert_eq!(events[2]["text"], "Once upon a time");
        assert_eq!(events[3]["part"]["text"], "Once upon a time");
        assert_eq!(events[4]["item"]["id"], "msg_1");
        assert_eq!(events[4]["item"]["content"][0]["text"], "Once upon a time");
        assert_eq!((&events[5]["output_index"], &events[6]["output_index"]), (&json!(3), &json!(3)));
        let response = &events[7]["response"];
        assert_eq!(response["id"], "resp_1");
        let ids: Vec<&str> = response["output"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["rs_1", "rs_1", "msg_1", "fc_2"]);
        assert_eq!(response["output"][2]["content"][0]["text"], "Once upon a time");
    }

    #[test]
    fn after_a_closed_item_the_continuation_adds_its_own() {
        let mut broken = start("resp_1", "msg_1", &["Once"]);
        broken.extend(end("resp_1", "msg_1", "Once").into_iter().take(3));
        let mut continuation = start("resp_2", "msg_2", &[" more"]);
        continuation.extend(end("resp_2", "msg_2", " more"));
        let events = parsed(&run(Splice::responses(seen(&stream(&broken))), &stream(&continuation), 5));
        assert_eq!(events[0]["type"], "response.output_item.added");
        assert_eq!((&events[0]["output_index"], &events[0]["sequence_number"]), (&json!(1), &json!(8)));
        assert_eq!(events[3]["text"], " more");
        let output = &events.last().unwrap()["response"]["output"];
        assert_eq!((&output[0]["id"], &output[1]["id"]), (&json!("msg_1"), &json!("msg_2")));
    }
}

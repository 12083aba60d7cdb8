//! The last bytes of an answer as it passes, and what they say once it ends: the token counts
//! the model server reported (`prompt_eval_count` / `eval_count`, or OpenAI's `usage`) and the
//! model that answered. Read without parsing the body: rate limits settle their token
//! reservations from it, traces record usage from it.

/// Bytes of an answer's end kept to read its counts from.
pub(crate) const TAIL_BYTES: usize = 4096;

/// An answer's last [`TAIL_BYTES`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
}

/// The tokens an answer's end reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// The prompt's tokens (`prompt_eval_count`, `prompt_tokens`).
    pub(crate) input: Option<u64>,
    /// The answer's tokens (`eval_count`, `completion_tokens`).
    pub(crate) output: Option<u64>,
}

impl Usage {
    /// Prompt and answer together.
    pub(crate) fn total(self) -> u64 {
        self.input.unwrap_or(0) + self.output.unwrap_or(0)
    }
}

impl Tail {
    /// Notes a chunk of the answer.
    pub(crate) fn saw(&mut self, data: &[u8]) {
        if data.len() >= TAIL_BYTES {
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[data.len() - TAIL_BYTES..]);
            return;
        }
        let overflow = (self.bytes.len() + data.len()).saturating_sub(TAIL_BYTES);
        self.bytes.drain(..overflow);
        self.bytes.extend_from_slice(data);
    }

    /// The counts the answer's end reports, the last of each (Ollama's `prompt_eval_count` /
    /// `eval_count`, else OpenAI's `usage`); `None` when it reports none.
    pub(crate) fn usage(&self) -> Option<Usage> {
        let tail = &self.bytes;
        let found = |u: &Usage| u.input.is_some() || u.output.is_some();
        // Ollama's names first (the usual upstream), OpenAI's only when those are absent.
        let ollama = Usage { input: last_number(tail, &PROMPT_EVAL_COUNT), output: last_number(tail, &EVAL_COUNT) };
        if found(&ollama) {
            return Some(ollama);
        }
        let openai = Usage { input: last_number(tail, &PROMPT_TOKENS), output: last_number(tail, &COMPLETION_TOKENS) };
        if found(&openai) {
            return Some(openai);
        }
        // Anthropic's Messages API and OpenAI's Responses API.
        let named = Usage { input: last_number(tail, &INPUT_TOKENS), output: last_number(tail, &OUTPUT_TOKENS) };
        found(&named).then_some(named)
    }

    /// The model the answer names last (`"model": "…"`), when it names one.
    pub(crate) fn model(&self) -> Option<String> {
        let at = MODEL.rfind(&self.bytes)?;
        let rest = &self.bytes[at + MODEL.needle().len()..];
        let start = rest.iter().position(|b| !matches!(b, b' ' | b':' | b'\t'))?;
        let rest = rest[start..].strip_prefix(b"\"")?;
        let end = memchr::memchr(b'"', rest)?;
        let name = std::str::from_utf8(&rest[..end]).ok()?;
        (!name.is_empty() && !name.contains('\\')).then(|| name.to_owned())
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What watches an answer's body as it passes to the client: its last bytes, and its end.
pub(crate) trait AnswerWatch: Send + Unpin + 'static {
    /// Where the answer's bytes are kept.
    fn tail(&mut self) -> &mut Tail;
    /// The body has ended cleanly (seen as its last frame is read, before the client has it).
    fn ended(&mut self);
}

/// `body`, with its bytes and its end shown to `watch` (which acts on drop what it must, e.g.
/// for an answer cut short).
pub(crate) fn watched<W: AnswerWatch>(body: axum::body::Body, watch: W) -> axum::body::Body {
    axum::body::Body::new(Watched { body, watch })
}

struct Watched<W> {
    body: axum::body::Body,
    watch: W,
}

impl<W: AnswerWatch> http_body::Body for Watched<W> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.watch.tail().saw(data);
                }
                // A whole body says it has ended without being polled again.
                if self.body.is_end_stream() {
                    self.watch.ended();
                }
            }
            Poll::Ready(None) => self.watch.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A searcher for the last occurrence of a field name, built once: building one per search cost
/// more than the search (about 1.5k instructions each, five per answer).
type Field = std::sync::LazyLock<memchr::memmem::FinderRev<'static>>;

static PROMPT_EVAL_COUNT: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"prompt_eval_count\""));
static EVAL_COUNT: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"eval_count\""));
static PROMPT_TOKENS: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"prompt_tokens\""));
static COMPLETION_TOKENS: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"completion_tokens\""));
static INPUT_TOKENS: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"input_tokens\""));
static OUTPUT_TOKENS: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"output_tokens\""));
static MODEL: Field = Field::new(|| memchr::memmem::FinderRev::new(b"\"model\""));

/// The number after the last `"name":` in `text` (`name` quoted).
fn last_number(text: &[u8], name: &memchr::memmem::FinderRev<'static>) -> Option<u64> {
    let at = name.rfind(text)?;
    let rest = &text[at + name.needle().len()..];
    let rest = rest.iter().position(|b| !matches!(b, b' ' | b':' | b'\t')).map(|i| &rest[i..])?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &[u8]) -> Tail {
        let mut tail = Tail::default();
        tail.saw(text);
        tail
    }

    #[test]
    fn counts_are_read_from_the_answers_end() {
        let ollama = tail(br#"{"model":"llama3.2","done":true,"prompt_eval_count": 26,"eval_count":290}"#);
        assert_eq!(ollama.usage(), Some(Usage { input: Some(26), output: Some(290) }));
        assert_eq!(ollama.usage().unwrap().total(), 316);
        assert_eq!(ollama.model().as_deref(), Some("llama3.2"));
        let openai =
            tail(br#"data: {"model":"qwen","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#);
        assert_eq!(openai.usage().unwrap().total(), 15);
        assert_eq!(openai.model().as_deref(), Some("qwen"));
        assert_eq!(tail(br#"{"message":{"content":"eval_count"}}"#).usage(), None);
        let anthropic = tail(
            br#"event: message_delta
data: {"type":"message_delta","usage":{"input_tokens":12,"output_tokens":40}}"#,
        );
        assert_eq!(anthropic.usage(), Some(Usage { input: Some(12), output: Some(40) }));
        assert_eq!(tail(b"").usage(), None);
        assert_eq!(tail(br#"{"model": 3}"#).model(), None);
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.saw(&vec![b'a'; 3000]);
        tail.saw(&vec![b'b'; 3000]);
        assert_eq!(tail.bytes().len(), TAIL_BYTES);
        assert!(tail.bytes().ends_with(&[b'b'; 3000]));
        tail.saw(&vec![b'c'; 5000]);
        assert_eq!(tail.bytes(), vec![b'c'; TAIL_BYTES]);
    }

    proptest::proptest! {
        /// Whatever an upstream sends, reading its tail never panics, keeps at most TAIL_BYTES,
        /// and any count it finds was written in the text.
        #[test]
        fn any_bytes_are_read_without_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..600), 0..12)) {
            let mut tail = Tail::default();
            for chunk in &chunks {
                tail.saw(chunk);
            }
            proptest::prop_assert!(tail.bytes().len() <= TAIL_BYTES);
            if let Some(usage) = tail.usage() {
                let text = String::from_utf8_lossy(tail.bytes()).into_owned();
                for n in [usage.input, usage.output].into_iter().flatten() {
                    proptest::prop_assert!(text.contains(&n.to_string()));
                }
            }
            let _ = tail.model();
        }

        /// Counts and model names spliced into noise are found.
        #[test]
        fn counts_in_noise_are_found(noise in "[a-z {}:,\"]{0,200}", prompt in 0u32..1_000_000, answer in 0u32..1_000_000) {
            let mut tail = Tail::default();
            tail.saw(noise.as_bytes());
            tail.saw(format!(r#"{{"model":"m1","done":true,"prompt_eval_count":{prompt},"eval_count":{answer}}}"#).as_bytes());
            proptest::prop_assert_eq!(tail.usage(), Some(Usage { input: Some(u64::from(prompt)), output: Some(u64::from(answer)) }));
            proptest::prop_assert_eq!(tail.model(), Some("m1".to_owned()));
        }
    }
}

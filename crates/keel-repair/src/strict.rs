//! A strict JSON validator that builds nothing: the fast path for output that is already JSON.
//!
//! Accepts exactly what `serde_json` accepts (RFC 8259, no lone surrogates, no numbers that
//! overflow to infinity) at any nesting up to [`crate::MAX_DEPTH`], so text it passes can be
//! handed back as is and parsed later, only if someone asks for the value. The nesting is tracked
//! on an explicit stack (one byte per level), never by recursion, so no input can overflow the
//! thread's stack; input nested deeper than the limit is told apart from input that is not JSON.

use crate::MAX_DEPTH;

pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `word` is zero.
#[inline]
pub(crate) const fn has_zero(word: u64) -> u64 {
    word.wrapping_sub(LO) & !word & HI
}

/// Non-zero when some byte of `word` is a quote, a backslash or a control character.
#[inline]
pub(crate) const fn has_special(word: u64) -> u64 {
    has_zero(word ^ (LO * b'"' as u64))
        | has_zero(word ^ (LO * b'\\' as u64))
        | (word.wrapping_sub(LO * 0x20) & !word & HI)
}

/// How many spaces (`b' '`) start at `i` (eight bytes at a time: indentation is long).
#[inline]
pub(crate) fn spaces_at(b: &[u8], i: usize) -> usize {
    if b.get(i + 1) != Some(&b' ') {
        return usize::from(b.get(i) == Some(&b' '));
    }
    let mut j = i;
    while let Some(chunk) = b.get(j..j + 8)
        && let Ok(bytes) = <[u8; 8]>::try_from(chunk)
    {
        let other = u64::from_le_bytes(bytes) ^ (LO * u64::from(b' '));
        if other != 0 {
            return j - i + (other.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    j - i
}

/// What the strict validator found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strict {
    /// One JSON value with only JSON whitespace around it, nested `depth` containers deep (0 for
    /// a scalar).
    Json { depth: usize },
    /// Not (only) one JSON value.
    NotJson,
    /// Containers opened more than [`MAX_DEPTH`] deep (checked before the rest is read).
    TooDeep,
}

/// Is `b` one JSON value, with only JSON whitespace around it, at most [`MAX_DEPTH`] deep?
pub(crate) fn check(b: &[u8]) -> Strict {
    let mut validator = Validator { b, i: 0, depth: 0, too_deep: false };
    if validator.document() {
        Strict::Json { depth: validator.depth }
    } else if validator.too_deep {
        Strict::TooDeep
    } else {
        Strict::NotJson
    }
}

/// Whether `b` may be strict JSON, told from its last byte without reading the rest: a document
/// ends with `}`, `]`, `"`, a digit or the last letter of `true`, `false` or `null` (output cut
/// off, or prose after the value, does not). Text that cannot may still be nested too deep: see
/// [`check`].
pub(crate) fn may_end_document(b: &[u8]) -> bool {
    let last = b.iter().rev().find(|&&c| !is_ws(c));
    last.is_none_or(|c| matches!(c, b'}' | b']' | b'"' | b'0'..=b'9' | b'e' | b'l'))
}

/// Is `b` one JSON value, with only JSON whitespace around it, at most [`MAX_DEPTH`] deep?
#[cfg(test)]
pub(crate) fn is_json(b: &[u8]) -> bool {
    matches!(check(b), Strict::Json { .. })
}

struct Validator<'a> {
    b: &'a [u8],
    i: usize,
    /// The deepest nesting seen.
    depth: usize,
    /// Reading stopped at a container opened deeper than [`MAX_DEPTH`].
    too_deep: bool,
}

#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t')
}

impl Validator<'_> {
    #[inline]
    fn ws(&mut self) {
        loop {
            match self.b.get(self.i) {
                Some(b' ') => self.i += spaces_at(self.b, self.i),
                Some(&c) if is_ws(c) => self.i += 1,
                _ => return,
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Enters a container when the nesting allows it.
    fn open(&mut self, open: usize) -> bool {
        if open >= MAX_DEPTH {
            self.too_deep = true;
            return false;
        }
        self.depth = self.depth.max(open + 1);
        true
    }

    fn document(&mut self) -> bool {
        // true = object, false = array
        let mut stack: Vec<bool> = Vec::new();
        self.ws();
        'value: loop {
            // A value starts here.
            match self.peek() {
                Some(b'{') => {
                    if !self.open(stack.len()) {
                        return false;
                    }
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        if !self.key() {
                            return false;
                        }
                        stack.push(true);
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    if !self.open(stack.len()) {
                        return false;
                    }
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        stack.push(false);
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    if !self.string() {
                        return false;
                    }
                }
                Some(b't') => {
                    if !self.word(b"true") {
                        return false;
                    }
                }
                Some(b'f') => {
                    if !self.word(b"false") {
                        return false;
                    }
                }
                Some(b'n') => {
                    if !self.word(b"null") {
                        return false;
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    if !self.number() {
                        return false;
                    }
                }
                _ => return false,
            }
            // After a value: close containers, or find the next value.
            loop {
                self.ws();
                match stack.last() {
                    None => return self.i == self.b.len(),
                    Some(&true) => match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                            if !self.key() {
                                return false;
                            }
                            continue 'value;
                        }
                        Some(b'}') => {
                            self.i += 1;
                            stack.pop();
                        }
                        _ => return false,
                    },
                    Some(&false) => match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                            continue 'value;
                        }
                        Some(b']') => {
                            self.i += 1;
                            stack.pop();
                        }
                        _ => return false,
                    },
                }
            }
        }
    }

    /// `"key"` `:` and the whitespace before the value.
    fn key(&mut self) -> bool {
        if self.peek() != Some(b'"') || !self.string() {
            return false;
        }
        self.ws();
        if self.peek() != Some(b':') {
            return false;
        }
        self.i += 1;
        self.ws();
        true
    }

    fn word(&mut self, word: &[u8]) -> bool {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.b.get(at..at + 4)?;
        let mut code = 0u32;
        for &d in digits {
            code = code * 16 + (d as char).to_digit(16)?;
        }
        Some(code)
    }

    fn string(&mut self) -> bool {
        self.i += 1; // opening quote
        loop {
            // Eight bytes at a time while none is special.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let Ok(bytes) = <[u8; 8]>::try_from(chunk) else { break };
                let found = has_special(u64::from_le_bytes(bytes));
                if found != 0 {
                    // The lowest flag is exact (false flags only follow a true one): go there.
                    self.i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            let Some(c) = self.peek() else { return false };
            match c {
                b'"' => {
                    self.i += 1;
                    return true;
                }
                b'\\' => match self.b.get(self.i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                    Some(b'u') => {
                        let Some(code) = self.hex4(self.i + 2) else { return false };
                        self.i += 6;
                        if (0xD800..0xDC00).contains(&code) {
                            if self.b.get(self.i) != Some(&b'\\') || self.b.get(self.i + 1) != Some(&b'u') {
                                return false;
                            }
                            match self.hex4(self.i + 2) {
                                Some(low) if (0xDC00..0xE000).contains(&low) => self.i += 6,
                                _ => return false,
                            }
                        } else if (0xDC00..0xE000).contains(&code) {
                            return false;
                        }
                    }
                    _ => return false,
                },
                c if c < 0x20 => return false,
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> bool {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return false,
        }
        let mut exact = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return false;
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            exact = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return false;
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if !exact || self.i - start > 300 {
            // serde_json refuses numbers that overflow to infinity.
            let text = std::str::from_utf8(self.b.get(start..self.i).unwrap_or(&[])).unwrap_or("x");
            return text.parse::<f64>().is_ok_and(f64::is_finite);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json() {
        for ok in [
            "0",
            "-1.5e+10",
            "\"a\\u00e9\\ud83d\\ude80\\n\"",
            " {\"a\": [1, 2, {\"b\": null}], \"c\": true} ",
            "[]",
            "{}",
            "[[[]]]",
            "\"0123456789abcdef0123456789\"",
        ] {
            assert!(is_json(ok.as_bytes()), "{ok}");
            assert!(serde_json::from_str::<serde_json::Value>(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_serde_json_rejects() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "'a'",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "1e400",
            "{a: 1}",
            "[1] [2]",
            "NaN",
            "tru",
        ] {
            assert!(!is_json(bad.as_bytes()), "{bad:?}");
            assert!(serde_json::from_str::<serde_json::Value>(bad).is_err(), "{bad:?}");
        }
        for depth in 120..=128 {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(check(arrays.as_bytes()), Strict::Json { depth });
        }
    }

    #[test]
    fn depth_up_to_the_limit() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            for text in [arrays, objects] {
                let want = if depth <= MAX_DEPTH { Strict::Json { depth } } else { Strict::TooDeep };
                assert_eq!(check(text.as_bytes()), want, "depth {depth}");
            }
        }
        // Too deep is told apart only when the nesting was read that far.
        assert_eq!(check(b"[[1,]]"), Strict::NotJson);
        assert_eq!(check(b"7"), Strict::Json { depth: 0 });
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Every JSON document, compact or pretty, with whitespace after it, ends like one; text
        /// that does not is never strict JSON.
        #[test]
        fn documents_end_like_documents(value in any_json(), pretty: bool, tail in "[ \n\t\r]{0,3}", text in "[\\[\\]{}\"a-z0-9:, \n.\\\\-]{0,40}") {
            let written = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) };
            let document = written.unwrap_or_default() + &tail;
            proptest::prop_assert!(may_end_document(document.as_bytes()), "{:?}", document);
            if !may_end_document(text.as_bytes()) {
                proptest::prop_assert!(!is_json(text.as_bytes()), "{:?}", text);
            }
        }
    }
}

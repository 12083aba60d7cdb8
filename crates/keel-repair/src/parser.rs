//! The tolerant single-pass JSON parser.
//!
//! One recursive-descent pass over the bytes of one candidate fragment. It accepts the JSON that
//! models actually write — single, curly or no quotes, comments, trailing or missing commas,
//! Python/JS literals, lenient numbers, raw control characters and unescaped quotes in strings —
//! and closes whatever the end of the input cut open. What it cannot read without guessing (an
//! unquoted word where a value should be, a key without a colon) fails the fragment instead.
//!
//! The value is written as it is read, as compact JSON text byte for byte as `serde_json` would
//! serialize it (no `Value` is built: callers that need one parse the text, only then).
//!
//! Every look-ahead is bounded by a constant, so a fragment costs time linear in its length, and
//! nesting is bounded by [`MAX_DEPTH`] (the deepest value keel builds), so the stack is too; a
//! fragment nested deeper fails as [`Fail::deep`], and the caller refuses the whole output rather
//! than offering a shallower piece of it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Number, Value};

use crate::report::{FixLog, Strategy};
use crate::strict::{LO, has_special, has_zero, spaces_at};

/// Deepest nesting of objects and arrays the parser follows before failing the fragment.
pub(crate) const MAX_DEPTH: usize = crate::MAX_VALUE_DEPTH;

/// How far (bytes of whitespace, identifier) the string-closing heuristics look ahead.
const LOOKAHEAD: usize = 256;

/// Integers with at most this many digits fit `u64` and `i64` alike.
const SHORT_INTEGER: usize = 18;

/// Members an object checks for a repeated key by a linear search; past this, by a set.
const FEW_KEYS: usize = 32;

/// The result of parsing one value; the value itself is in the parser's output text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole value, written.
    Complete,
    /// The input ended inside the value; what was there is closed, written and kept.
    Partial,
    /// The input ended before anything worth keeping (a cut literal, a lone sign); nothing written.
    Dropped,
    /// An `...` placeholder stood where a value was; nothing written.
    Skipped,
}

/// The fragment is not JSON; `pos` is where reading failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail {
    pub(crate) pos: usize,
    /// How many values were read whole before failing: a fragment that failed after reading
    /// some is a broken document, and its inner pieces are not answers.
    pub(crate) progress: usize,
    /// Reading stopped at a container nested deeper than [`MAX_DEPTH`].
    pub(crate) deep: bool,
}

type PResult = Result<Parsed, Fail>;

/// Where a value sits: decides when a quote closes a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Key,
    Member,
    Element,
}

/// The delimiter family of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Double,
    Single,
    Backtick,
    CurlyDouble,
    CurlySingle,
}

/// One parsed top-level fragment.
#[derive(Debug)]
pub(crate) struct Fragment {
    /// Where the value (an object or an array) is in the scratch's text, as compact JSON exactly
    /// as `serde_json` serializes it: [`Scratch::json`].
    pub(crate) json: Range<usize>,
    /// Byte offset just past the value.
    pub(crate) end: usize,
    /// The input ended inside the value.
    pub(crate) truncated: bool,
    pub(crate) log: FixLog,
}

/// Parses the value that starts at `start` (an object or array in practice) and reads no further
/// than `end`. Its compact JSON is appended to `scratch`'s text, which the fragments of a region
/// share (nothing is appended when it fails).
pub(crate) fn parse_fragment(text: &str, start: usize, end: usize, scratch: &mut Scratch) -> Result<Fragment, Fail> {
    let from = scratch.out.len();
    scratch.keys.clear();
    // Room for the keys of a small document at once (the stack grows from there).
    scratch.keys.reserve(FEW_KEYS);
    // Compact text is seldom longer than what it was read from.
    scratch.out.reserve(end.min(text.len()).saturating_sub(start));
    let end = end.min(text.len());
    let bytes = text.as_bytes();
    let mut parser = Parser {
        text,
        b: bytes.get(..end).unwrap_or(bytes),
        pos: start,
        depth: 0,
        log: FixLog::default(),
        truncated: false,
        progress: 0,
        out: &mut scratch.out,
        keys: &mut scratch.keys,
        repeated_key: false,
        known_ws: (usize::MAX, usize::MAX),
    };
    let truncated = match parser.parse_value(Ctx::Element) {
        Ok(Parsed::Complete) => Ok(false),
        Ok(Parsed::Partial) => Ok(true),
        Ok(Parsed::Dropped | Parsed::Skipped) => Err(parser.fail(parser.pos)),
        Err(fail) => Err(fail),
    };
    let (end, log, repeated_key) = (parser.pos, parser.log, parser.repeated_key);
    let truncated = truncated.inspect_err(|_| scratch.out.truncate(from))?;
    if repeated_key {
        let json = without_repeated_keys(scratch.out.get(from..).unwrap_or_default());
        scratch.out.truncate(from);
        scratch.out.push_str(&json);
    }
    Ok(Fragment { json: from..scratch.out.len(), end, truncated, log })
}

/// JSON text where an object repeats a key, as a `Value` holds it: the last value, in the first
/// one's place.
fn without_repeated_keys(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|value| serde_json::to_string(&value).ok())
        .unwrap_or_else(|| json.to_owned())
}

/// The buffers the parser writes in, shared by the fragments of a region.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The fragments' values as compact JSON, one after the other.
    out: String,
    /// Hashes of the keys of the open objects.
    keys: Vec<u64>,
}

impl Scratch {
    /// The compact JSON of a fragment.
    pub(crate) fn json(&self, range: Range<usize>) -> &str {
        self.out.get(range).unwrap_or_default()
    }

    /// Forgets the last fragment (at `range`), which is not kept.
    pub(crate) fn drop_last(&mut self, range: Range<usize>) {
        if range.end == self.out.len() {
            self.out.truncate(range.start);
        }
    }

    /// The compact JSON of a fragment as its own string: the whole text when the fragment is
    /// all of it and fills at least half of it (no copy), else a copy, so that no value holds
    /// much more memory than its text.
    pub(crate) fn take_json(&mut self, range: Range<usize>) -> String {
        let whole = range.start == 0 && range.end == self.out.len();
        if whole && self.out.len() * 2 >= self.out.capacity() {
            std::mem::take(&mut self.out)
        } else {
            self.json(range).to_owned()
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    /// The text's bytes, cut at the fragment's end: `b.len()` is the end.
    b: &'a [u8],
    pos: usize,
    depth: usize,
    log: FixLog,
    truncated: bool,
    /// Values read whole so far (see [`Fail::progress`]).
    progress: usize,
    /// The value read so far, as compact JSON.
    out: &'a mut String,
    /// Hashes of the keys of the open objects, innermost last (to notice a repeated key).
    keys: &'a mut Vec<u64>,
    /// Some object (possibly) repeats a key: the text is rewritten the way a `Value` keeps it.
    repeated_key: bool,
    /// A stretch of line break and spaces already read by a look-ahead: where it starts and
    /// where the next token is.
    known_ws: (usize, usize),
}

/// Length of the Unicode space (NBSP, BOM, zero-width, ideographic, …) at `i`, or 0.
pub(crate) fn unicode_space_len(b: &[u8], i: usize) -> usize {
    match (b.get(i), b.get(i + 1), b.get(i + 2)) {
        (Some(0xC2), Some(0xA0 | 0x85), _) => 2,
        (Some(0xE2), Some(0x80), Some(0x80..=0x8F | 0xA8..=0xAF))
        | (Some(0xE2), Some(0x81), Some(0x9F | 0xA0))
        | (Some(0xE3), Some(0x80), Some(0x80))
        | (Some(0xEF), Some(0xBB), Some(0xBF))
        | (Some(0xE1), Some(0x9A), Some(0x80)) => 3,
        _ => 0,
    }
}

/// Can `c` not be whitespace or start a comment (an ASCII byte that is neither)?
#[inline]
fn starts_token(c: u8) -> bool {
    c > b' ' && c < 0x80 && c != b'/' && c != b'#'
}

/// Just past the `*/` that closes a block comment whose body starts at `from`, or the end.
fn comment_end(b: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(off) = memchr::memchr(b'*', b.get(at..).unwrap_or(&[])) {
        let star = at + off;
        if b.get(star + 1) == Some(&b'/') {
            return star + 2;
        }
        at = star + 1;
    }
    b.len()
}

/// The quote (and its byte length) at `i`, if one is there.
fn quote_at(b: &[u8], i: usize) -> Option<(Quote, usize)> {
    match b.get(i)? {
        b'"' => Some((Quote::Double, 1)),
        b'\'' => Some((Quote::Single, 1)),
        b'`' => Some((Quote::Backtick, 1)),
        0xE2 => match (b.get(i + 1), b.get(i + 2)) {
            (Some(0x80), Some(0x9C | 0x9D)) => Some((Quote::CurlyDouble, 3)),
            (Some(0x80), Some(0x98 | 0x99)) => Some((Quote::CurlySingle, 3)),
            _ => None,
        },
        _ => None,
    }
}

/// True when the quote at `i` can close a string opened with `open`; returns its length.
fn closer_len(open: Quote, b: &[u8], i: usize) -> Option<usize> {
    let (quote, len) = quote_at(b, i)?;
    let closes = match open {
        Quote::Double => quote == Quote::Double,
        Quote::Single => quote == Quote::Single,
        Quote::Backtick => quote == Quote::Backtick,
        Quote::CurlyDouble => matches!(quote, Quote::CurlyDouble | Quote::Double),
        Quote::CurlySingle => matches!(quote, Quote::CurlySingle | Quote::Single),
    };
    closes.then_some(len)
}

fn is_ascii_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// JSON-ish literal words a value may be spelled as: the JSON they mean, and the fix.
fn literal_value(word: &str) -> Option<(&'static str, Option<Strategy>)> {
    Some(match word {
        "true" => ("true", None),
        "false" => ("false", None),
        "null" => ("null", None),
        "True" | "TRUE" => ("true", Some(Strategy::PythonLiteral)),
        "False" | "FALSE" => ("false", Some(Strategy::PythonLiteral)),
        "None" | "NULL" | "Null" => ("null", Some(Strategy::PythonLiteral)),
        "undefined" => ("null", Some(Strategy::UndefinedLiteral)),
        "NaN" | "Infinity" => ("null", Some(Strategy::NonFiniteNumber)),
        _ => return None,
    })
}

const LITERALS: [&str; 14] = [
    "true",
    "false",
    "null",
    "True",
    "TRUE",
    "False",
    "FALSE",
    "None",
    "NULL",
    "Null",
    "undefined",
    "NaN",
    "Infinity",
    "-Infinity",
];

impl Parser<'_> {
    fn fail(&self, pos: usize) -> Fail {
        Fail { pos, progress: self.progress, deep: false }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn slice(&self, from: usize, to: usize) -> &str {
        self.text.get(from..to).unwrap_or("")
    }

    /// Notes the first time the input ends inside a structure.
    fn hit_end(&mut self) {
        if !self.truncated {
            self.truncated = true;
            self.log.push(Strategy::Truncation, self.b.len());
        }
    }

    /// Skips whitespace (ASCII and Unicode spaces) and comments.
    #[inline(always)]
    fn skip_ws(&mut self) {
        // Most often the next token is here, or after one space (`, ` and `: `), or after
        // indentation a look-ahead already read.
        if self.pos == self.known_ws.0 {
            self.pos = self.known_ws.1;
            return;
        }
        match self.peek() {
            Some(c) if starts_token(c) => return,
            Some(b' ') if self.b.get(self.pos + 1).is_some_and(|&c| starts_token(c)) => {
                self.pos += 1;
                return;
            }
            _ => {}
        }
        self.skip_ws_and_comments();
    }

    #[inline(never)]
    fn skip_ws_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' => self.pos += spaces_at(self.b, self.pos),
                b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => self.pos += 1,
                b'/' => match self.b.get(self.pos + 1) {
                    Some(b'/') => {
                        self.log.push(Strategy::Comment, self.pos);
                        self.skip_line();
                    }
                    Some(b'*') => {
                        self.log.push(Strategy::Comment, self.pos);
                        self.pos = comment_end(self.b, self.pos + 2);
                    }
                    _ => return,
                },
                b'#' => {
                    self.log.push(Strategy::Comment, self.pos);
                    self.skip_line();
                }
                0xC2 | 0xE1 | 0xE2 | 0xE3 | 0xEF => {
                    let len = unicode_space_len(self.b, self.pos);
                    if len == 0 {
                        return;
                    }
                    self.log.push(Strategy::UnicodeWhitespace, self.pos);
                    self.pos += len;
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        self.pos = match memchr::memchr(b'\n', self.b.get(self.pos..).unwrap_or(&[])) {
            Some(off) => self.pos + off + 1,
            None => self.b.len(),
        };
    }

    /// True at an `...` (or `…`) placeholder.
    fn at_ellipsis(&self) -> bool {
        matches!(
            (self.b.get(self.pos), self.b.get(self.pos + 1), self.b.get(self.pos + 2)),
            (Some(b'.'), Some(b'.'), Some(b'.')) | (Some(0xE2), Some(0x80), Some(0xA6))
        )
    }

    fn skip_ellipsis(&mut self) {
        self.log.push(Strategy::Ellipsis, self.pos);
        if self.peek() == Some(0xE2) {
            self.pos += 3;
        } else {
            while self.peek() == Some(b'.') {
                self.pos += 1;
            }
        }
    }

    fn enter(&mut self) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(Fail { deep: true, ..self.fail(self.pos) }) } else { Ok(()) }
    }

    fn parse_value(&mut self, ctx: Ctx) -> PResult {
        self.skip_ws();
        let Some(c) = self.peek() else {
            self.hit_end();
            return Ok(Parsed::Dropped);
        };
        match c {
            b'{' => self.parse_object(),
            b'[' => self.parse_array(),
            b'"' | b'\'' | b'`' => self.parse_string(ctx),
            b'-' | b'+' | b'0'..=b'9' => self.parse_number(),
            b'.' => {
                if self.at_ellipsis() {
                    self.skip_ellipsis();
                    Ok(Parsed::Skipped)
                } else {
                    self.parse_number()
                }
            }
            0xE2 => {
                if quote_at(self.b, self.pos).is_some() {
                    self.parse_string(ctx)
                } else if self.at_ellipsis() {
                    self.skip_ellipsis();
                    Ok(Parsed::Skipped)
                } else {
                    Err(self.fail(self.pos))
                }
            }
            c if c.is_ascii_alphabetic() => self.parse_literal(),
            _ => Err(self.fail(self.pos)),
        }
    }

    /// Writes the closer of the open container and leaves it: `parsed` says how it ended.
    fn close(&mut self, closer: char, parsed: Parsed) -> PResult {
        self.out.push(closer);
        self.depth -= 1;
        Ok(parsed)
    }

    fn parse_object(&mut self) -> PResult {
        self.enter()?;
        self.pos += 1; // '{'
        self.out.push('{');
        let mut keys = KeySet::new(self.keys.len());
        let mut members = 0usize;
        // After a member: the next thing should be ',' or '}'.
        let mut need_comma = false;
        let mut after_comma = false;
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else {
                self.hit_end();
                return self.close_object(&keys, Parsed::Partial);
            };
            match c {
                b'}' | b']' => {
                    if c == b']' {
                        self.log.push(Strategy::MismatchedBracket, self.pos);
                    }
                    if after_comma {
                        self.log.push(Strategy::TrailingComma, self.pos);
                    }
                    self.pos += 1;
                    return self.close_object(&keys, Parsed::Complete);
                }
                b',' => {
                    if !need_comma {
                        self.log.push(Strategy::StrayComma, self.pos);
                    }
                    self.pos += 1;
                    need_comma = false;
                    after_comma = true;
                    continue;
                }
                _ if self.at_ellipsis() => {
                    self.skip_ellipsis();
                    continue;
                }
                _ => {}
            }
            if need_comma {
                self.log.push(Strategy::MissingComma, self.pos);
            }
            after_comma = false;
            let mark = self.out.len();
            if members > 0 {
                self.out.push(',');
            }
            let key_at = self.out.len();
            if self.parse_key()?.is_none() {
                // The key itself was cut: the member is dropped.
                self.out.truncate(mark);
                return self.close_object(&keys, Parsed::Partial);
            }
            let key = key_hash(self.out.as_bytes().get(key_at..).unwrap_or_default());
            self.skip_ws();
            match self.peek() {
                None => {
                    // Key without colon at the end: dropped.
                    self.hit_end();
                    self.out.truncate(mark);
                    return self.close_object(&keys, Parsed::Partial);
                }
                Some(b':') => self.pos += 1,
                Some(_) => return Err(self.fail(self.pos)),
            }
            self.out.push(':');
            match self.parse_value(Ctx::Member)? {
                Parsed::Complete => {
                    self.insert_key(&mut keys, key);
                    members += 1;
                    need_comma = true;
                    self.progress += 1;
                }
                Parsed::Partial => {
                    self.insert_key(&mut keys, key);
                    return self.close_object(&keys, Parsed::Partial);
                }
                Parsed::Dropped => {
                    self.out.truncate(mark);
                    return self.close_object(&keys, Parsed::Partial);
                }
                Parsed::Skipped => {
                    self.out.truncate(mark);
                    need_comma = true;
                }
            }
        }
    }

    fn close_object(&mut self, keys: &KeySet, parsed: Parsed) -> PResult {
        self.keys.truncate(keys.from);
        self.close('}', parsed)
    }

    /// Notes the key of a member kept in the object; a key seen before marks the text for
    /// rewriting (see [`without_repeated_keys`]).
    fn insert_key(&mut self, keys: &mut KeySet, key: u64) {
        let seen = self.keys.get(keys.from..).unwrap_or_default();
        let repeated = match &mut keys.many {
            Some(set) => !set.insert(key),
            None if seen.len() < FEW_KEYS => seen.contains(&key),
            None => {
                let mut set: HashSet<u64> = seen.iter().copied().collect();
                let repeated = !set.insert(key);
                keys.many = Some(set);
                repeated
            }
        };
        self.repeated_key |= repeated;
        self.keys.push(key);
    }

    /// Reads an object key: quoted (any quote style) or a bare identifier, and writes it quoted.
    /// `None` when the input ends inside it.
    fn parse_key(&mut self) -> Result<Option<()>, Fail> {
        if quote_at(self.b, self.pos).is_some() {
            return match self.parse_string(Ctx::Key)? {
                Parsed::Complete => Ok(Some(())),
                _ => Ok(None),
            };
        }
        let start = self.pos;
        loop {
            let Some(c) = self.peek() else {
                self.hit_end();
                return Ok(None);
            };
            if is_ascii_ident(c) || (c == b'-' && self.pos > start) {
                self.pos += 1;
            } else if c >= 0x80 {
                match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
                    Some(ch) if ch.is_alphanumeric() => self.pos += ch.len_utf8(),
                    _ => break,
                }
            } else {
                break;
            }
        }
        if self.pos == start {
            return Err(self.fail(start));
        }
        self.log.push(Strategy::UnquotedKey, start);
        self.out.push('"');
        push_escaped(self.out, self.text.get(start..self.pos).unwrap_or(""));
        self.out.push('"');
        Ok(Some(()))
    }

    fn parse_array(&mut self) -> PResult {
        self.enter()?;
        self.pos += 1; // '['
        self.out.push('[');
        let mut items = 0usize;
        let mut need_comma = false;
        let mut after_comma = false;
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else {
                self.hit_end();
                return self.close(']', Parsed::Partial);
            };
            match c {
                b']' | b'}' => {
                    if c == b'}' {
                        self.log.push(Strategy::MismatchedBracket, self.pos);
                    }
                    if after_comma {
                        self.log.push(Strategy::TrailingComma, self.pos);
                    }
                    self.pos += 1;
                    return self.close(']', Parsed::Complete);
                }
                b',' => {
                    if !need_comma {
                        self.log.push(Strategy::StrayComma, self.pos);
                    }
                    self.pos += 1;
                    need_comma = false;
                    after_comma = true;
                    continue;
                }
                _ => {}
            }
            if need_comma {
                self.log.push(Strategy::MissingComma, self.pos);
            }
            after_comma = false;
            let mark = self.out.len();
            if items > 0 {
                self.out.push(',');
            }
            match self.parse_value(Ctx::Element)? {
                Parsed::Complete => {
                    items += 1;
                    need_comma = true;
                    self.progress += 1;
                }
                Parsed::Partial => return self.close(']', Parsed::Partial),
                Parsed::Dropped => {
                    self.out.truncate(mark);
                    return self.close(']', Parsed::Partial);
                }
                Parsed::Skipped => {
                    self.out.truncate(mark);
                    need_comma = true;
                }
            }
        }
    }

    /// Copies `text[from..to]` (string content without anything to escape) to the output.
    fn copy(&mut self, from: usize, to: usize) {
        let text = self.text;
        self.out.push_str(text.get(from..to).unwrap_or(""));
    }

    /// Notes the first raw control character of a stretch of string content, if there was one.
    fn note_control(&mut self, control: Option<usize>) {
        if let Some(at) = control {
            self.log.push(Strategy::ControlCharacter, at);
        }
    }

    /// The common string: straight quotes, nothing to escape, closed by the first quote. Its
    /// content is written as it stands; false (nothing written or read) for any other.
    #[inline]
    fn plain_string<const DOUBLE: bool>(&mut self, closer: u8, stops: &Stops, ctx: Ctx) -> bool {
        let i = stops.find(self.b, self.pos);
        if self.b.get(i) != Some(&closer)
            || !(ctx == Ctx::Key || self.closes_at_hand(i + 1) || self.closes_here(i + 1, ctx))
        {
            return false;
        }
        let text = self.text;
        if DOUBLE {
            // Opening quote, content and closing quote in one copy.
            self.out.push_str(text.get(self.pos - 1..=i).unwrap_or(""));
        } else {
            self.out.push('"');
            self.out.push_str(text.get(self.pos..i).unwrap_or(""));
            self.out.push('"');
        }
        self.pos = i + 1;
        true
    }

    /// The usual continuation right after a closing quote — `}` or `]`, or `,` and the next
    /// quote, either maybe after spaces or on the next line after indentation: [`Parser::closes_here`] would say
    /// yes, with less work. The line break and indentation it saw are remembered, so that
    /// [`Parser::skip_ws`] does not read them again.
    #[inline]
    fn closes_at_hand(&mut self, j: usize) -> bool {
        let comma = self.b.get(j) == Some(&b',');
        let ws = j + usize::from(comma);
        let mut k = ws;
        if self.b.get(k) == Some(&b'\n') {
            k += 1;
        }
        k += spaces_at(self.b, k);
        let closes = match self.b.get(k) {
            Some(b'"' | b'\'') => comma,
            Some(b'}' | b']') => !comma,
            _ => false,
        };
        // Within the look-ahead `closes_here` would read.
        if !closes || k - ws >= LOOKAHEAD {
            return false;
        }
        self.known_ws = (ws, k);
        true
    }

    /// Reads a string and writes it as a JSON string. One pass: the runs between the bytes that
    /// matter (quotes, backslashes, control characters) are found eight bytes at a time and
    /// copied whole.
    fn parse_string(&mut self, ctx: Ctx) -> PResult {
        let open = self.pos;
        let Some((quote, qlen)) = quote_at(self.b, self.pos) else {
            return Err(self.fail(self.pos));
        };
        match quote {
            Quote::Double => {}
            Quote::Single | Quote::Backtick => self.log.push(Strategy::SingleQuotes, open),
            Quote::CurlyDouble | Quote::CurlySingle => self.log.push(Strategy::SmartQuotes, open),
        }
        let stops = Stops::of(quote);
        self.pos += qlen;
        let plain = match quote {
            Quote::Double => self.plain_string::<true>(b'"', &stops, ctx),
            Quote::Single => self.plain_string::<false>(b'\'', &stops, ctx),
            Quote::Backtick => self.plain_string::<false>(b'`', &stops, ctx),
            Quote::CurlyDouble | Quote::CurlySingle => false,
        };
        if plain {
            return Ok(Parsed::Complete);
        }
        self.out.push('"');
        // Content from `run` on is not written yet; `control` is the first raw control character
        // since the string's start or the last escape (noted once per such stretch).
        let mut run = self.pos;
        let mut control = None;
        loop {
            let i = stops.find(self.b, self.pos);
            let Some(&c) = self.b.get(i) else {
                // The input ends inside the string: keep the partial text.
                let end = self.b.len();
                self.copy(run, end);
                self.note_control(control);
                self.pos = end;
                self.hit_end();
                self.out.push('"');
                return Ok(Parsed::Partial);
            };
            self.copy(run, i);
            run = i + 1;
            self.pos = i + 1;
            if c == b'\\' {
                self.note_control(control.take());
                if !self.escape(i) {
                    self.hit_end();
                    self.out.push('"');
                    return Ok(Parsed::Partial);
                }
                run = self.pos;
                continue;
            }
            if c < 0x20 {
                control.get_or_insert(i);
                push_char(self.out, char::from(c));
                continue;
            }
            let Some(clen) = closer_len(quote, self.b, i) else {
                // A `"` inside a string with other quotes, or the lead byte of some other
                // character (curly strings only): data.
                if c == b'"' {
                    self.out.push_str("\\\"");
                } else {
                    run = i;
                }
                continue;
            };
            if ctx == Ctx::Key || self.closes_at_hand(i + clen) || self.closes_here(i + clen, ctx) {
                self.note_control(control);
                self.pos = i + clen;
                self.out.push('"');
                return Ok(Parsed::Complete);
            }
            // A quote inside the text: data.
            self.log.push(Strategy::UnescapedQuote, i);
            let text = self.text;
            push_escaped(self.out, text.get(i..i + clen).unwrap_or(""));
            run = i + clen;
            self.pos = i + clen;
        }
    }

    /// Decodes the escape at `i` (a backslash), writes the character (escaped again as JSON) and
    /// moves past it. False when the input ends inside the escape.
    fn escape(&mut self, i: usize) -> bool {
        let Some(&e) = self.b.get(i + 1) else {
            self.pos = self.b.len();
            return false;
        };
        self.pos = i + 2;
        match e {
            b'"' => push_char(self.out, '"'),
            b'\\' => push_char(self.out, '\\'),
            b'/' => push_char(self.out, '/'),
            b'\'' => push_char(self.out, '\''),
            b'`' => push_char(self.out, '`'),
            b'b' => push_char(self.out, '\u{8}'),
            b'f' => push_char(self.out, '\u{c}'),
            b'n' => push_char(self.out, '\n'),
            b'r' => push_char(self.out, '\r'),
            b't' => push_char(self.out, '\t'),
            b'\n' => {}
            b'\r' => {
                if self.b.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
            }
            b'u' => return self.unicode_escape(i),
            _ => {
                // Not an escape JSON knows: keep the backslash; the character follows as data.
                self.log.push(Strategy::InvalidEscape, i);
                push_char(self.out, '\\');
                self.pos = i + 1;
            }
        }
        true
    }

    fn hex4(&self, at: usize) -> Option<Option<u32>> {
        let digits = self.b.get(at..at + 4)?;
        let mut code = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Some(None),
            };
            code = code * 16 + u32::from(v);
        }
        Some(Some(code))
    }

    fn unicode_escape(&mut self, i: usize) -> bool {
        let code = match self.hex4(i + 2) {
            None => {
                // Cut inside the escape.
                self.pos = self.b.len();
                return false;
            }
            Some(None) => {
                self.log.push(Strategy::InvalidEscape, i);
                push_escaped(self.out, "\\u");
                self.pos = i + 2;
                return true;
            }
            Some(Some(code)) => code,
        };
        self.pos = i + 6;
        if (0xD800..0xDC00).contains(&code) {
            if self.b.get(i + 6) == Some(&b'\\') && self.b.get(i + 7) == Some(&b'u') {
                match self.hex4(i + 8) {
                    None => {
                        self.pos = self.b.len();
                        return false;
                    }
                    Some(Some(low)) if (0xDC00..0xE000).contains(&low) => {
                        let combined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        push_char(self.out, char::from_u32(combined).unwrap_or('\u{FFFD}'));
                        self.pos = i + 12;
                        return true;
                    }
                    Some(_) => {}
                }
            } else if self.b.len() < i + 8 {
                // The low half may have been cut off.
                self.pos = self.b.len();
                return false;
            }
            push_char(self.out, '\u{FFFD}');
            return true;
        }
        push_char(self.out, char::from_u32(code).unwrap_or('\u{FFFD}'));
        true
    }

    /// Skips ASCII and Unicode spaces from `j` (bounded); returns the position and whether any
    /// space was seen.
    fn skip_spaces_from(&self, mut j: usize) -> (usize, bool) {
        let limit = j + LOOKAHEAD;
        let mut saw = false;
        while j < self.b.len() && j < limit {
            match self.b.get(j) {
                Some(b' ') => j += spaces_at(self.b, j).min(limit - j),
                Some(b'\t' | b'\n' | b'\r') => j += 1,
                _ => {
                    let len = unicode_space_len(self.b, j);
                    if len == 0 {
                        break;
                    }
                    j += len;
                }
            }
            saw = true;
        }
        (j, saw)
    }

    /// Does an identifier followed by `:` start at `j`? (An unquoted key after a missing comma.)
    fn ident_then_colon(&self, j: usize) -> bool {
        let mut k = j;
        let limit = j + LOOKAHEAD;
        while k < self.b.len() && k < limit {
            match self.b.get(k) {
                Some(&c) if is_ascii_ident(c) || c == b'-' => k += 1,
                _ => break,
            }
        }
        if k == j {
            return false;
        }
        let (k, _) = self.skip_spaces_from(k);
        self.b.get(k) == Some(&b':')
    }

    /// Does a JSON-ish literal word (`true`, `None`, …) start at `j`?
    fn literal_at(&self, j: usize) -> bool {
        let mut k = j;
        while k < self.b.len() && k < j + 16 && self.b.get(k).is_some_and(|c| c.is_ascii_alphabetic()) {
            k += 1;
        }
        let word = self.slice(j, k);
        !word.is_empty() && literal_value(word).is_some() && !self.b.get(k).is_some_and(|&c| is_ascii_ident(c))
    }

    /// Is a quote that ends just before `j` the end of the string? It is when what follows reads
    /// as the continuation of the document; otherwise the quote is part of the text.
    fn closes_here(&self, j: usize, ctx: Ctx) -> bool {
        self.closes_here_at(j, ctx, 0)
    }

    fn closes_here_at(&self, j: usize, ctx: Ctx, depth: u8) -> bool {
        let (j, saw_space) = self.skip_spaces_from(j);
        let Some(&c) = self.b.get(j) else { return true };
        if let Some((_, len)) = quote_at(self.b, j) {
            // `…a "quote""`: when the quote right after this one closes the string, this one is
            // data. Otherwise a quote after this one starts the next token (a missing comma).
            return saw_space || depth >= 3 || !self.closes_here_at(j + len, ctx, depth + 1);
        }
        match c {
            b',' => self.valid_after_comma(j + 1, ctx),
            b'}' | b']' => true,
            b'/' => matches!(self.b.get(j + 1), Some(b'/' | b'*')),
            b'#' => matches!(self.b.get(j + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')),
            b'{' | b'[' => ctx == Ctx::Element && saw_space,
            _ if c.is_ascii_alphabetic() || c == b'_' => match ctx {
                Ctx::Member => self.ident_then_colon(j),
                Ctx::Element => saw_space && self.literal_at(j),
                Ctx::Key => true,
            },
            _ => false,
        }
    }

    /// After a `,` that follows a candidate closing quote: does the next token start a member
    /// (object) or an element (array)?
    fn valid_after_comma(&self, k: usize, ctx: Ctx) -> bool {
        let (k, _) = self.skip_spaces_from(k);
        let Some(&c) = self.b.get(k) else { return true };
        if quote_at(self.b, k).is_some() {
            return true;
        }
        match c {
            b'}' | b']' | b'\n' => true,
            b'/' => matches!(self.b.get(k + 1), Some(b'/' | b'*')),
            b'#' => true,
            b'.' => {
                self.b.get(k + 1) == Some(&b'.')
                    || (ctx != Ctx::Member && self.b.get(k + 1).is_some_and(u8::is_ascii_digit))
            }
            _ => match ctx {
                Ctx::Member => self.ident_then_colon(k),
                Ctx::Element | Ctx::Key => matches!(c, b'{' | b'[' | b'-' | b'+' | b'0'..=b'9') || self.literal_at(k),
            },
        }
    }

    fn parse_number(&mut self) -> PResult {
        let start = self.pos;
        let mut p = self.pos;
        let mut normalized = false;
        let negative = match self.b.get(p) {
            Some(b'+') => {
                normalized = true;
                p += 1;
                false
            }
            Some(b'-') => {
                p += 1;
                true
            }
            _ => false,
        };
        if self.b.get(p).is_some_and(u8::is_ascii_alphabetic) {
            // -Infinity, +NaN …
            let mut k = p;
            while self.b.get(k).is_some_and(u8::is_ascii_alphabetic) {
                k += 1;
            }
            let word = self.slice(p, k);
            if k >= self.b.len() && LITERALS.iter().any(|l| l.trim_start_matches('-').starts_with(word)) {
                self.pos = k;
                self.hit_end();
                return Ok(Parsed::Dropped);
            }
            if matches!(word, "Infinity" | "NaN" | "inf" | "nan") {
                self.log.push(Strategy::NonFiniteNumber, start);
                self.pos = k;
                self.out.push_str("null");
                return Ok(Parsed::Complete);
            }
            return Err(self.fail(start));
        }
        let int_start = p;
        while self.b.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        let int_digits = p - int_start;
        let mut has_dot = false;
        let mut frac_digits = 0;
        if self.b.get(p) == Some(&b'.') && self.b.get(p + 1) != Some(&b'.') {
            has_dot = true;
            p += 1;
            let frac_start = p;
            while self.b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
            frac_digits = p - frac_start;
        }
        if int_digits == 0 && frac_digits == 0 {
            if p >= self.b.len() {
                self.pos = p;
                self.hit_end();
                return Ok(Parsed::Dropped);
            }
            return Err(self.fail(start));
        }
        let mut exp_start = None;
        if matches!(self.b.get(p), Some(b'e' | b'E')) {
            let save = p;
            p += 1;
            if matches!(self.b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            let digits_start = p;
            while self.b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
            if p == digits_start {
                // At the end, the exponent was cut: keep the mantissa. Elsewhere, `1e` is not a number.
                if p < self.b.len() {
                    return Err(self.fail(p));
                }
            } else {
                exp_start = Some(save);
            }
        }
        if let Some(&c) = self.b.get(p)
            && (is_ascii_ident(c) || matches!(c, b'.' | b'-' | b'+' | b':'))
        {
            return Err(self.fail(p));
        }
        if int_digits == 0 || (has_dot && frac_digits == 0) || (int_digits > 1 && self.b.get(int_start) == Some(&b'0'))
        {
            normalized = true;
        }
        if normalized {
            self.log.push(Strategy::NumberFormat, start);
        }
        let value = if !has_dot && exp_start.is_none() && int_digits <= SHORT_INTEGER {
            // Fits 64 bits either way: written as serde_json writes the integer.
            let text = self.text;
            let digits = text.get(int_start..int_start + int_digits).unwrap_or("").trim_start_matches('0');
            if digits.is_empty() {
                self.out.push('0');
            } else {
                if negative {
                    self.out.push('-');
                }
                self.out.push_str(digits);
            }
            self.pos = p;
            return Ok(self.number_end());
        } else if !has_dot && exp_start.is_none() {
            let digits = self.slice(int_start, int_start + int_digits);
            integer_value(digits, negative)
        } else if exp_start.is_none()
            && write_short_decimal(
                self.out,
                negative,
                self.text.get(int_start..int_start + int_digits).unwrap_or(""),
                self.text.get(int_start + int_digits + 1..int_start + int_digits + 1 + frac_digits).unwrap_or(""),
            )
        {
            self.pos = p;
            return Ok(self.number_end());
        } else {
            let mut clean = String::with_capacity(p - start + 2);
            if negative {
                clean.push('-');
            }
            if int_digits == 0 {
                clean.push('0');
            } else {
                clean.push_str(self.slice(int_start, int_start + int_digits));
            }
            if has_dot && frac_digits > 0 {
                clean.push('.');
                clean.push_str(self.slice(int_start + int_digits + 1, int_start + int_digits + 1 + frac_digits));
            }
            if let Some(e) = exp_start {
                clean.push_str(self.slice(e, p));
            }
            float_value(&clean)
        };
        match value {
            Some(number) => {
                let _ = write!(self.out, "{number}");
            }
            None => {
                self.log.push(Strategy::NonFiniteNumber, start);
                self.out.push_str("null");
            }
        }
        self.pos = p;
        Ok(self.number_end())
    }

    /// A number was written and read up to `pos`: at the end of the input it may have been cut.
    fn number_end(&mut self) -> Parsed {
        if self.at_end() {
            // The number may have been cut; keep what is there.
            self.hit_end();
            return Parsed::Partial;
        }
        Parsed::Complete
    }

    fn parse_literal(&mut self) -> PResult {
        let start = self.pos;
        let mut k = start;
        while self.b.get(k).is_some_and(|&c| is_ascii_ident(c)) {
            k += 1;
        }
        let word = self.slice(start, k);
        if k >= self.b.len() {
            if let Some((json, strategy)) = literal_value(word) {
                if let Some(strategy) = strategy {
                    self.log.push(strategy, start);
                }
                self.pos = k;
                self.hit_end();
                self.out.push_str(json);
                return Ok(Parsed::Partial);
            }
            if LITERALS.iter().any(|l| l.starts_with(word)) {
                self.pos = k;
                self.hit_end();
                return Ok(Parsed::Dropped);
            }
            return Err(self.fail(start));
        }
        match literal_value(word) {
            Some((json, strategy)) => {
                if let Some(strategy) = strategy {
                    self.log.push(strategy, start);
                }
                self.pos = k;
                self.out.push_str(json);
                Ok(Parsed::Complete)
            }
            None => Err(self.fail(start)),
        }
    }
}

/// An integer literal as a JSON number (falls back to a float past 64 bits).
fn integer_value(digits: &str, negative: bool) -> Option<Number> {
    if negative {
        let mut text = String::with_capacity(digits.len() + 1);
        text.push('-');
        text.push_str(digits);
        if let Ok(v) = text.parse::<i64>() {
            return Some(Number::from(v));
        }
        return float_value(&text);
    }
    if let Ok(v) = digits.parse::<u64>() {
        return Some(Number::from(v));
    }
    float_value(digits)
}

fn float_value(text: &str) -> Option<Number> {
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// The bytes a string's content stops at: its closing quote (and, for curly quotes, the lead byte
/// of any curly quote), plus what JSON escapes: `"`, `\\` and control characters.
struct Stops {
    /// Eight copies of each extra stop byte.
    extra: [u64; 2],
}

impl Stops {
    fn of(quote: Quote) -> Self {
        let (a, b) = match quote {
            Quote::Double => (b'"', b'"'),
            Quote::Single => (b'\'', b'\''),
            Quote::Backtick => (b'`', b'`'),
            Quote::CurlyDouble => (0xE2, 0xE2),
            Quote::CurlySingle => (b'\'', 0xE2),
        };
        Self { extra: [LO * u64::from(a), LO * u64::from(b)] }
    }

    #[inline]
    fn is_stop(&self, c: u8) -> bool {
        let [a, b] = self.extra;
        c < 0x20 || c == b'"' || c == b'\\' || u64::from(c) == a & 0xFF || u64::from(c) == b & 0xFF
    }

    /// The first stop at or after `from`, or `b.len()`.
    #[inline]
    fn find(&self, b: &[u8], from: usize) -> usize {
        let mut i = from;
        let [a, c] = self.extra;
        while let Some(chunk) = b.get(i..i + 8)
            && let Ok(bytes) = <[u8; 8]>::try_from(chunk)
        {
            let word = u64::from_le_bytes(bytes);
            let found = has_special(word) | has_zero(word ^ a) | has_zero(word ^ c);
            if found != 0 {
                // The lowest flag is exact (false flags only follow a true one).
                return i + (found.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while let Some(&byte) = b.get(i) {
            if self.is_stop(byte) {
                return i;
            }
            i += 1;
        }
        b.len()
    }
}

/// Significant digits an `f64` keeps exactly through decimal → binary → decimal.
const EXACT_DIGITS: usize = 15;

/// Writes the decimal `int.frac` (digits only, no exponent) as `serde_json` writes the `f64` it
/// is, when that can be told from the digits: at most 15 significant digits (so the shortest
/// digits that read back as the same `f64` are these) and a magnitude that `serde_json` writes
/// without an exponent (1e-5 ≤ |x| < 1e16). False, with nothing written, otherwise (and for zero).
fn write_short_decimal(out: &mut String, negative: bool, int: &str, frac: &str) -> bool {
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let significant = if int.is_empty() {
        let digits = frac.trim_start_matches('0');
        // 0.0000123 is written 1.23e-5.
        if digits.is_empty() || frac.len() - digits.len() > 4 {
            return false;
        }
        digits.len()
    } else {
        if int.len() > 16 {
            return false;
        }
        if frac.is_empty() { int.trim_end_matches('0').len() } else { int.len() + frac.len() }
    };
    if significant > EXACT_DIGITS {
        return false;
    }
    if negative {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    out.push('.');
    out.push_str(if frac.is_empty() { "0" } else { frac });
    true
}

/// The keys of one open object: where its hashes start on the parser's key stack, and a set of
/// them once it has many.
struct KeySet {
    from: usize,
    many: Option<HashSet<u64>>,
}

impl KeySet {
    fn new(from: usize) -> Self {
        Self { from, many: None }
    }
}

/// A hash of a key's JSON text. Equal keys have equal text; two keys with the same hash are
/// taken as repeated, which only costs the rewrite (see [`without_repeated_keys`]).
fn key_hash(text: &[u8]) -> u64 {
    let mut hash = text.len() as u64;
    for chunk in text.chunks(8) {
        let mut word = [0u8; 8];
        if let Some(head) = word.get_mut(..chunk.len()) {
            head.copy_from_slice(chunk);
        }
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    hash
}

/// How `serde_json` writes byte `c` inside a string: `None` when as is, else the letter after
/// the backslash (`u` for `\u00XX`).
#[inline]
fn escape_letter(c: u8) -> Option<u8> {
    match c {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        0x08 => Some(b'b'),
        0x09 => Some(b't'),
        0x0A => Some(b'n'),
        0x0C => Some(b'f'),
        0x0D => Some(b'r'),
        0..0x20 => Some(b'u'),
        _ => None,
    }
}

/// Writes the escape of ASCII byte `c` (one that [`escape_letter`] escapes).
fn push_escape(out: &mut String, c: u8, letter: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push(char::from(letter));
    if letter == b'u' {
        out.push_str("00");
        out.push(char::from(HEX.get(usize::from(c >> 4)).copied().unwrap_or(b'0')));
        out.push(char::from(HEX.get(usize::from(c & 0xF)).copied().unwrap_or(b'0')));
    }
}

/// Writes `s` as the content of a JSON string, escaped as `serde_json` escapes it.
fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping.
        if let Some(chunk) = bytes.get(i..i + 8)
            && let Ok(word) = <[u8; 8]>::try_from(chunk)
            && has_special(u64::from_le_bytes(word)) == 0
        {
            i += 8;
            continue;
        }
        let c = bytes.get(i).copied().unwrap_or(0);
        if let Some(letter) = escape_letter(c) {
            out.push_str(s.get(run..i).unwrap_or(""));
            push_escape(out, c, letter);
            run = i + 1;
        }
        i += 1;
    }
    out.push_str(s.get(run..).unwrap_or(""));
}

/// Writes `c` as string content, escaped as `serde_json` escapes it.
fn push_char(out: &mut String, c: char) {
    match u8::try_from(c).ok().and_then(|b| escape_letter(b).map(|letter| (b, letter))) {
        Some((b, letter)) => push_escape(out, b, letter),
        None => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> (Value, bool, FixLog) {
        let start = text.find(['{', '[']).unwrap();
        let mut scratch = Scratch::default();
        let f = parse_fragment(text, start, text.len(), &mut scratch).unwrap();
        (serde_json::from_str(scratch.json(f.json)).unwrap(), f.truncated, f.log)
    }

    fn fails(text: &str) -> bool {
        let start = text.find(['{', '[']).unwrap();
        parse_fragment(text, start, text.len(), &mut Scratch::default()).is_err()
    }

    #[test]
    fn plain_json() {
        let (v, t, log) = parse(r#"{"a": [1, 2.5, -3, true, false, null], "b": {"c": "d\n\u00e9\ud83d\ude80"}}"#);
        assert_eq!(v, json!({"a": [1, 2.5, -3, true, false, null], "b": {"c": "d\né🚀"}}));
        assert!(!t);
        assert_eq!(log.total(), 0);
    }

    #[test]
    fn syntax_repairs() {
        let (v, _, log) = parse("{'a': 'x', b: +1, c: .5, d: 5., e: True, f: None, g: undefined, h: [1, 2,],}");
        assert_eq!(v, json!({"a": "x", "b": 1, "c": 0.5, "d": 5.0, "e": true, "f": null, "g": null, "h": [1, 2]}));
        assert!(log.count(Strategy::SingleQuotes) >= 2);
        assert_eq!(log.count(Strategy::TrailingComma), 2);
    }

    #[test]
    fn comments_are_not_in_strings() {
        let (v, _, log) = parse("{\"url\": \"http://x/#y\", // c\n \"b\": 1 /* d */, # e\n \"c\": 2}");
        assert_eq!(v, json!({"url": "http://x/#y", "b": 1, "c": 2}));
        assert_eq!(log.count(Strategy::Comment), 3);
    }

    #[test]
    fn unescaped_quotes_and_newlines() {
        let (v, _, _) = parse("{\"a\": \"Click \"Save\" now.\", \"b\": \"l1\nl2\"}");
        assert_eq!(v, json!({"a": "Click \"Save\" now.", "b": "l1\nl2"}));
    }

    #[test]
    fn missing_commas() {
        let (v, _, log) = parse("{\"a\": 1\n \"b\": \"x\" \"c\": [1 2] d: 3}");
        assert_eq!(v, json!({"a": 1, "b": "x", "c": [1, 2], "d": 3}));
        assert_eq!(log.count(Strategy::MissingComma), 4);
    }

    #[test]
    fn truncation() {
        assert_eq!(parse("{\"a\": \"xy").0, json!({"a": "xy"}));
        assert_eq!(parse("{\"a\": 1, \"b\"").0, json!({"a": 1}));
        assert_eq!(parse("{\"a\": 1, \"b\":").0, json!({"a": 1}));
        assert_eq!(parse("{\"a\": 1, \"bc").0, json!({"a": 1}));
        assert_eq!(parse("{\"a\": [1, {\"b\": tr").0, json!({"a": [1, {}]}));
        assert_eq!(parse("[\"a\\u00").0, json!(["a"]));
        assert!(parse("[1, 2").1);
    }

    #[test]
    fn refuses_non_json_braces() {
        assert!(fails("{first_name}"));
        assert!(fails("{{total}}"));
        assert!(fails("{ sum += i; }"));
        assert!(fails("a { color: red; }"));
        assert!(fails("[citation needed]"));
    }

    #[test]
    fn deep_nesting_fails_instead_of_overflowing() {
        let text = "[".repeat(100_000);
        assert!(parse_fragment(&text, 0, text.len(), &mut Scratch::default()).is_err());
    }

    #[test]
    fn smart_quotes_and_unicode_space() {
        let (v, _, _) = parse("{\u{201c}a\u{201d}:\u{00a0}\u{201c}He's here\u{201d},\u{200b}\"b\"\u{3000}: 1}");
        assert_eq!(v, json!({"a": "He's here", "b": 1}));
    }
}

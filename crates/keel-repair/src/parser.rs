//! The tolerant single-pass JSON parser.
//!
//! One recursive-descent pass over the bytes of one candidate fragment. It accepts the JSON that
//! models actually write — single, curly or no quotes, comments, trailing or missing commas,
//! Python/JS literals, lenient numbers, raw control characters and unescaped quotes in strings —
//! and closes whatever the end of the input cut open. What it cannot read without guessing (an
//! unquoted word where a value should be, a key without a colon) fails the fragment instead.
//!
//! Every look-ahead is bounded by a constant, so a fragment costs time linear in its length, and
//! nesting is bounded by [`MAX_DEPTH`] (the deepest value keel builds), so the stack is too; a
//! fragment nested deeper fails as [`Fail::deep`], and the caller refuses the whole output rather
//! than offering a shallower piece of it.

use memchr::{memchr2, memchr3};
use serde_json::{Map, Number, Value};

use crate::report::{FixLog, Strategy};

/// Deepest nesting of objects and arrays the parser follows before failing the fragment.
pub(crate) const MAX_DEPTH: usize = crate::MAX_VALUE_DEPTH;

/// How far (bytes of whitespace, identifier) the string-closing heuristics look ahead.
const LOOKAHEAD: usize = 256;

/// The result of parsing one value.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A whole value.
    Complete(Value),
    /// The input ended inside the value; what was there is closed and kept.
    Partial(Value),
    /// The input ended before anything worth keeping (a cut literal, a lone sign).
    Dropped,
    /// An `...` placeholder stood where a value was.
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
    pub(crate) value: Value,
    /// Byte offset just past the value.
    pub(crate) end: usize,
    /// The input ended inside the value.
    pub(crate) truncated: bool,
    pub(crate) log: FixLog,
}

/// Parses the value that starts at `start` (an object or array in practice) and reads no further
/// than `end`.
pub(crate) fn parse_fragment(text: &str, start: usize, end: usize) -> Result<Fragment, Fail> {
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
    };
    match parser.parse_value(Ctx::Element)? {
        Parsed::Complete(value) => Ok(Fragment { value, end: parser.pos, truncated: false, log: parser.log }),
        Parsed::Partial(value) => Ok(Fragment { value, end: parser.pos, truncated: true, log: parser.log }),
        Parsed::Dropped | Parsed::Skipped => Err(parser.fail(parser.pos)),
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

/// JSON-ish literal words a value may be spelled as.
fn literal_value(word: &str) -> Option<(Value, Option<Strategy>)> {
    Some(match word {
        "true" => (Value::Bool(true), None),
        "false" => (Value::Bool(false), None),
        "null" => (Value::Null, None),
        "True" | "TRUE" => (Value::Bool(true), Some(Strategy::PythonLiteral)),
        "False" | "FALSE" => (Value::Bool(false), Some(Strategy::PythonLiteral)),
        "None" | "NULL" | "Null" => (Value::Null, Some(Strategy::PythonLiteral)),
        "undefined" => (Value::Null, Some(Strategy::UndefinedLiteral)),
        "NaN" | "Infinity" => (Value::Null, Some(Strategy::NonFiniteNumber)),
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
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => self.pos += 1,
                b'/' => match self.b.get(self.pos + 1) {
                    Some(b'/') => {
                        self.log.push(Strategy::Comment, self.pos);
                        self.skip_line();
                    }
                    Some(b'*') => {
                        self.log.push(Strategy::Comment, self.pos);
                        let body = self.pos + 2;
                        self.pos = match memchr::memmem::find(self.b.get(body..).unwrap_or(&[]), b"*/") {
                            Some(off) => body + off + 2,
                            None => self.b.len(),
                        };
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

    fn parse_object(&mut self) -> PResult {
        self.enter()?;
        self.pos += 1; // '{'
        let mut map = Map::new();
        // After a member: the next thing should be ',' or '}'.
        let mut need_comma = false;
        let mut after_comma = false;
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else {
                self.hit_end();
                self.depth -= 1;
                return Ok(Parsed::Partial(Value::Object(map)));
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
                    self.depth -= 1;
                    return Ok(Parsed::Complete(Value::Object(map)));
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
            let Some(key) = self.parse_key()? else {
                // The key itself was cut: the member is dropped.
                self.depth -= 1;
                return Ok(Parsed::Partial(Value::Object(map)));
            };
            self.skip_ws();
            match self.peek() {
                None => {
                    // Key without colon at the end: dropped.
                    self.hit_end();
                    self.depth -= 1;
                    return Ok(Parsed::Partial(Value::Object(map)));
                }
                Some(b':') => self.pos += 1,
                Some(_) => return Err(self.fail(self.pos)),
            }
            match self.parse_value(Ctx::Member)? {
                Parsed::Complete(value) => {
                    map.insert(key, value);
                    need_comma = true;
                    self.progress += 1;
                }
                Parsed::Partial(value) => {
                    map.insert(key, value);
                    self.depth -= 1;
                    return Ok(Parsed::Partial(Value::Object(map)));
                }
                Parsed::Dropped => {
                    self.depth -= 1;
                    return Ok(Parsed::Partial(Value::Object(map)));
                }
                Parsed::Skipped => need_comma = true,
            }
        }
    }

    /// Reads an object key: quoted (any quote style) or a bare identifier. `None` when the input
    /// ends inside it.
    fn parse_key(&mut self) -> Result<Option<String>, Fail> {
        if quote_at(self.b, self.pos).is_some() {
            return match self.parse_string(Ctx::Key)? {
                Parsed::Complete(Value::String(key)) => Ok(Some(key)),
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
        Ok(Some(self.slice(start, self.pos).to_owned()))
    }

    fn parse_array(&mut self) -> PResult {
        self.enter()?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        let mut need_comma = false;
        let mut after_comma = false;
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else {
                self.hit_end();
                self.depth -= 1;
                return Ok(Parsed::Partial(Value::Array(items)));
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
                    self.depth -= 1;
                    return Ok(Parsed::Complete(Value::Array(items)));
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
            match self.parse_value(Ctx::Element)? {
                Parsed::Complete(value) => {
                    items.push(value);
                    need_comma = true;
                    self.progress += 1;
                }
                Parsed::Partial(value) => {
                    items.push(value);
                    self.depth -= 1;
                    return Ok(Parsed::Partial(Value::Array(items)));
                }
                Parsed::Dropped => {
                    self.depth -= 1;
                    return Ok(Parsed::Partial(Value::Array(items)));
                }
                Parsed::Skipped => need_comma = true,
            }
        }
    }

    /// Appends `text[from..to]` to `out`, noting raw control characters (kept as data).
    fn push_segment(&mut self, out: &mut String, from: usize, to: usize) {
        let text = self.text;
        let segment = text.get(from..to).unwrap_or("");
        if let Some(off) = segment.bytes().position(|c| c < 0x20) {
            self.log.push(Strategy::ControlCharacter, from + off);
        }
        out.push_str(segment);
    }

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
        self.pos += qlen;
        let mut out = String::new();
        let mut seg = self.pos;
        loop {
            let rest = self.b.get(self.pos..).unwrap_or(&[]);
            let found = match quote {
                Quote::Double => memchr2(b'"', b'\\', rest),
                Quote::Single => memchr2(b'\'', b'\\', rest),
                Quote::Backtick => memchr2(b'`', b'\\', rest),
                Quote::CurlyDouble => memchr3(b'"', b'\\', 0xE2, rest),
                Quote::CurlySingle => memchr3(b'\'', b'\\', 0xE2, rest),
            };
            let Some(off) = found else {
                // The input ends inside the string: keep the partial text.
                let end = self.b.len();
                self.push_segment(&mut out, seg, end);
                self.pos = end;
                self.hit_end();
                return Ok(Parsed::Partial(Value::String(out)));
            };
            let i = self.pos + off;
            if self.b.get(i) == Some(&b'\\') {
                self.push_segment(&mut out, seg, i);
                if !self.escape(i, &mut out) {
                    self.hit_end();
                    return Ok(Parsed::Partial(Value::String(out)));
                }
                seg = self.pos;
                continue;
            }
            let Some(clen) = closer_len(quote, self.b, i) else {
                // A lead byte of some other character (curly strings only).
                self.pos = i + 1;
                continue;
            };
            if ctx == Ctx::Key || self.closes_here(i + clen, ctx) {
                self.push_segment(&mut out, seg, i);
                self.pos = i + clen;
                return Ok(Parsed::Complete(Value::String(out)));
            }
            // A quote inside the text: data.
            self.log.push(Strategy::UnescapedQuote, i);
            self.pos = i + clen;
        }
    }

    /// Decodes the escape at `i` (a backslash) into `out` and moves past it. False when the input
    /// ends inside the escape.
    fn escape(&mut self, i: usize, out: &mut String) -> bool {
        let Some(&e) = self.b.get(i + 1) else {
            self.pos = self.b.len();
            return false;
        };
        self.pos = i + 2;
        match e {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'\'' => out.push('\''),
            b'`' => out.push('`'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'\n' => {}
            b'\r' => {
                if self.b.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
            }
            b'u' => return self.unicode_escape(i, out),
            _ => {
                // Not an escape JSON knows: keep the backslash; the character follows as data.
                self.log.push(Strategy::InvalidEscape, i);
                out.push('\\');
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

    fn unicode_escape(&mut self, i: usize, out: &mut String) -> bool {
        let code = match self.hex4(i + 2) {
            None => {
                // Cut inside the escape.
                self.pos = self.b.len();
                return false;
            }
            Some(None) => {
                self.log.push(Strategy::InvalidEscape, i);
                out.push_str("\\u");
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
                        out.push(char::from_u32(combined).unwrap_or('\u{FFFD}'));
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
            out.push('\u{FFFD}');
            return true;
        }
        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
        true
    }

    /// Skips ASCII and Unicode spaces from `j` (bounded); returns the position and whether any
    /// space was seen.
    fn skip_spaces_from(&self, mut j: usize) -> (usize, bool) {
        let limit = j + LOOKAHEAD;
        let mut saw = false;
        while j < self.b.len() && j < limit {
            match self.b.get(j) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => j += 1,
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
                return Ok(Parsed::Complete(Value::Null));
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
        let value = if !has_dot && exp_start.is_none() {
            let digits = self.slice(int_start, int_start + int_digits);
            integer_value(digits, negative)
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
        let value = match value {
            Some(number) => Value::Number(number),
            None => {
                self.log.push(Strategy::NonFiniteNumber, start);
                Value::Null
            }
        };
        self.pos = p;
        if self.at_end() {
            // The number may have been cut; keep what is there.
            self.hit_end();
            return Ok(Parsed::Partial(value));
        }
        Ok(Parsed::Complete(value))
    }

    fn parse_literal(&mut self) -> PResult {
        let start = self.pos;
        let mut k = start;
        while self.b.get(k).is_some_and(|&c| is_ascii_ident(c)) {
            k += 1;
        }
        let word = self.slice(start, k);
        if k >= self.b.len() {
            if let Some((value, strategy)) = literal_value(word) {
                if let Some(strategy) = strategy {
                    self.log.push(strategy, start);
                }
                self.pos = k;
                self.hit_end();
                return Ok(Parsed::Partial(value));
            }
            if LITERALS.iter().any(|l| l.starts_with(word)) {
                self.pos = k;
                self.hit_end();
                return Ok(Parsed::Dropped);
            }
            return Err(self.fail(start));
        }
        match literal_value(word) {
            Some((value, strategy)) => {
                if let Some(strategy) = strategy {
                    self.log.push(strategy, start);
                }
                self.pos = k;
                Ok(Parsed::Complete(value))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> (Value, bool, FixLog) {
        let start = text.find(['{', '[']).unwrap();
        let f = parse_fragment(text, start, text.len()).unwrap();
        (f.value, f.truncated, f.log)
    }

    fn fails(text: &str) -> bool {
        let start = text.find(['{', '[']).unwrap();
        parse_fragment(text, start, text.len()).is_err()
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
        assert!(parse_fragment(&text, 0, text.len()).is_err());
    }

    #[test]
    fn smart_quotes_and_unicode_space() {
        let (v, _, _) = parse("{\u{201c}a\u{201d}:\u{00a0}\u{201c}He's here\u{201d},\u{200b}\"b\"\u{3000}: 1}");
        assert_eq!(v, json!({"a": "He's here", "b": 1}));
    }
}

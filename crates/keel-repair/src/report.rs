//! The repair report: every fix the engine applied, where, and by which strategy.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many fixes a report lists one by one; past that only the per-strategy counts grow, so a
/// pathological input cannot make the report larger than the document.
pub const MAX_LISTED_FIXES: usize = 256;

/// One repair strategy. The serialized name (`snake_case`) is stable: logs and metrics use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// A `<think>…</think>` (or `<thinking>`) block was dropped: drafts in it are not the answer.
    ThinkBlock,
    /// The value was taken out of a markdown code fence.
    Fence,
    /// Prose before or after the value was dropped.
    Prose,
    /// The document was escaped once (`{\"a\": 1}`) and was unescaped.
    EscapedJson,
    /// A JSON string held the whole document; its content is the document.
    StringifiedDocument,
    /// Several top-level values (back to back, one per line or comma separated) became an array.
    Concatenated,
    /// Closing brackets after the end of the value were dropped.
    ExtraClosing,
    /// A closing bracket of the wrong kind closed the open container.
    MismatchedBracket,
    /// A comma before a closing bracket was dropped.
    TrailingComma,
    /// A comma where no value was (leading or doubled) was dropped.
    StrayComma,
    /// A missing comma between two members or elements was inserted.
    MissingComma,
    /// A single-quoted (or backquoted) string became a double-quoted one.
    SingleQuotes,
    /// Curly (typographic) quotes used as delimiters became plain quotes.
    SmartQuotes,
    /// An unquoted object key was quoted.
    UnquotedKey,
    /// A `//`, `/* */` or `#` comment was dropped.
    Comment,
    /// `True`/`False`/`None` (or upper-case spellings) became `true`/`false`/`null`.
    PythonLiteral,
    /// `undefined` became `null`.
    UndefinedLiteral,
    /// `NaN` or `Infinity` (not representable in JSON) became `null`.
    NonFiniteNumber,
    /// A number in a non-JSON spelling (`+1`, `.5`, `5.`, `007`) was normalized.
    NumberFormat,
    /// BOM, NBSP, zero-width or ideographic space between tokens was treated as whitespace.
    UnicodeWhitespace,
    /// A raw newline, tab or other control character inside a string was kept as data.
    ControlCharacter,
    /// A quote inside a string that does not end it was kept as data.
    UnescapedQuote,
    /// An invalid escape sequence inside a string was kept literally.
    InvalidEscape,
    /// A `...` placeholder was dropped.
    Ellipsis,
    /// The output was cut off: open strings and containers were closed, an incomplete member
    /// dropped.
    Truncation,
    /// A string holding a number became a number (the schema says number or integer).
    CoerceNumber,
    /// A string `"true"`/`"false"` became a boolean (the schema says boolean).
    CoerceBoolean,
    /// A number became a string (the schema says string).
    CoerceString,
    /// An integral float (`5.0`) became an integer (the schema says integer).
    CoerceInteger,
    /// An enum value in the wrong case or spelling became the schema's spelling.
    EnumCase,
    /// A lone value became a one-element array (the schema says array).
    WrapArray,
    /// A string holding JSON became the object or array it holds (the schema says so).
    ParseStringified,
    /// A key was matched to a schema property by case, snake/camel/kebab spelling or a typo.
    KeyMatch,
    /// A field unknown to the schema was dropped (`additionalProperties: false`).
    DropExtra,
    /// An optional field set to `null` that the schema does not allow to be null was dropped.
    DropNull,
}

/// Every strategy, in declaration order (used to index the per-strategy counters).
/// Keep in sync with the enum: `Strategy::index` relies on declaration order (a test checks).
const ALL: [Strategy; 35] = [
    Strategy::ThinkBlock,
    Strategy::Fence,
    Strategy::Prose,
    Strategy::EscapedJson,
    Strategy::StringifiedDocument,
    Strategy::Concatenated,
    Strategy::ExtraClosing,
    Strategy::MismatchedBracket,
    Strategy::TrailingComma,
    Strategy::StrayComma,
    Strategy::MissingComma,
    Strategy::SingleQuotes,
    Strategy::SmartQuotes,
    Strategy::UnquotedKey,
    Strategy::Comment,
    Strategy::PythonLiteral,
    Strategy::UndefinedLiteral,
    Strategy::NonFiniteNumber,
    Strategy::NumberFormat,
    Strategy::UnicodeWhitespace,
    Strategy::ControlCharacter,
    Strategy::UnescapedQuote,
    Strategy::InvalidEscape,
    Strategy::Ellipsis,
    Strategy::Truncation,
    Strategy::CoerceNumber,
    Strategy::CoerceBoolean,
    Strategy::CoerceString,
    Strategy::CoerceInteger,
    Strategy::EnumCase,
    Strategy::WrapArray,
    Strategy::ParseStringified,
    Strategy::KeyMatch,
    Strategy::DropExtra,
    Strategy::DropNull,
];

impl Strategy {
    /// Every strategy, in declaration order.
    pub const ALL: [Strategy; 35] = ALL;

    /// The stable `snake_case` name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ThinkBlock => "think_block",
            Self::Fence => "fence",
            Self::Prose => "prose",
            Self::EscapedJson => "escaped_json",
            Self::StringifiedDocument => "stringified_document",
            Self::Concatenated => "concatenated",
            Self::ExtraClosing => "extra_closing",
            Self::MismatchedBracket => "mismatched_bracket",
            Self::TrailingComma => "trailing_comma",
            Self::StrayComma => "stray_comma",
            Self::MissingComma => "missing_comma",
            Self::SingleQuotes => "single_quotes",
            Self::SmartQuotes => "smart_quotes",
            Self::UnquotedKey => "unquoted_key",
            Self::Comment => "comment",
            Self::PythonLiteral => "python_literal",
            Self::UndefinedLiteral => "undefined_literal",
            Self::NonFiniteNumber => "non_finite_number",
            Self::NumberFormat => "number_format",
            Self::UnicodeWhitespace => "unicode_whitespace",
            Self::ControlCharacter => "control_character",
            Self::UnescapedQuote => "unescaped_quote",
            Self::InvalidEscape => "invalid_escape",
            Self::Ellipsis => "ellipsis",
            Self::Truncation => "truncation",
            Self::CoerceNumber => "coerce_number",
            Self::CoerceBoolean => "coerce_boolean",
            Self::CoerceString => "coerce_string",
            Self::CoerceInteger => "coerce_integer",
            Self::EnumCase => "enum_case",
            Self::WrapArray => "wrap_array",
            Self::ParseStringified => "parse_stringified",
            Self::KeyMatch => "key_match",
            Self::DropExtra => "drop_extra",
            Self::DropNull => "drop_null",
        }
    }

    /// The summary category this strategy belongs to.
    #[must_use]
    pub const fn category(self) -> Category {
        match self {
            Self::ThinkBlock
            | Self::Fence
            | Self::Prose
            | Self::EscapedJson
            | Self::StringifiedDocument
            | Self::Concatenated => Category::Extracted,
            Self::Truncation => Category::ClosedTruncation,
            Self::CoerceNumber
            | Self::CoerceBoolean
            | Self::CoerceString
            | Self::CoerceInteger
            | Self::EnumCase
            | Self::WrapArray
            | Self::ParseStringified => Category::CoercedTypes,
            Self::KeyMatch => Category::RenamedKeys,
            Self::DropExtra | Self::DropNull => Category::DroppedFields,
            Self::ExtraClosing
            | Self::MismatchedBracket
            | Self::TrailingComma
            | Self::StrayComma
            | Self::MissingComma
            | Self::SingleQuotes
            | Self::SmartQuotes
            | Self::UnquotedKey
            | Self::Comment
            | Self::PythonLiteral
            | Self::UndefinedLiteral
            | Self::NonFiniteNumber
            | Self::NumberFormat
            | Self::UnicodeWhitespace
            | Self::ControlCharacter
            | Self::UnescapedQuote
            | Self::InvalidEscape
            | Self::Ellipsis => Category::FixedSyntax,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coarse summary of what was done, for an HTTP header (`X-Keel-Repair: fixed-syntax,coerced-types`)
/// or a metric label. Ordered from least to most intrusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The value was cut out of surrounding text (fences, prose, think blocks, escaping).
    Extracted,
    /// JSON syntax was repaired (quotes, commas, comments, literals, numbers, whitespace).
    FixedSyntax,
    /// Truncated output was closed.
    ClosedTruncation,
    /// Values were converted to the types the schema asks for.
    CoercedTypes,
    /// Keys were renamed to the schema's property names.
    RenamedKeys,
    /// Fields were dropped to satisfy the schema.
    DroppedFields,
}

impl Category {
    /// The stable `kebab-case` name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Extracted => "extracted",
            Self::FixedSyntax => "fixed-syntax",
            Self::ClosedTruncation => "closed-truncation",
            Self::CoercedTypes => "coerced-types",
            Self::RenamedKeys => "renamed-keys",
            Self::DroppedFields => "dropped-fields",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fix the engine applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    /// Which strategy.
    pub strategy: Strategy,
    /// Byte offset in the input where it applied (for fixes made by the schema stage: where the
    /// value starts, or 0 when unknown).
    pub position: usize,
    /// What changed, when a short description helps (`"Label" -> "label"`, JSON pointer of a
    /// coerced value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything the engine did to turn the input into the output.
///
/// Serializes as `{"fixes": [{"strategy", "position", "detail"?}, …], "omitted_fixes": n,
/// "counts": {"trailing_comma": 2, …}, "categories": ["fixed-syntax", …]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The fixes in the order they were applied (at most [`MAX_LISTED_FIXES`]).
    pub fixes: Vec<Fix>,
    /// Fixes applied but not listed because the list was full.
    pub omitted_fixes: usize,
    /// How many times each strategy applied (listed or not).
    pub counts: std::collections::BTreeMap<Strategy, u64>,
    /// The summary categories, ordered, without duplicates.
    pub categories: Vec<Category>,
}

impl Report {
    /// An empty report.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one fix.
    pub fn push(&mut self, strategy: Strategy, position: usize, detail: Option<String>) {
        *self.counts.entry(strategy).or_insert(0) += 1;
        let category = strategy.category();
        if let Err(at) = self.categories.binary_search(&category) {
            self.categories.insert(at, category);
        }
        if self.fixes.len() < MAX_LISTED_FIXES {
            self.fixes.push(Fix { strategy, position, detail });
        } else {
            self.omitted_fixes += 1;
        }
    }

    /// Appends every fix of `other` (a sub-stage's report) to this one: the same as pushing its
    /// fixes one by one (and counting those it did not keep), with one counter update per
    /// strategy.
    pub(crate) fn absorb(&mut self, other: FixLog) {
        if other.is_empty() {
            return;
        }
        let room = MAX_LISTED_FIXES.saturating_sub(self.fixes.len());
        let listed = other.fixes.len();
        if listed > room {
            self.omitted_fixes += listed - room;
        }
        if self.fixes.is_empty() && listed <= room {
            // The log's list becomes this one (no copy).
            self.fixes = other.fixes;
        } else {
            self.fixes.extend(other.fixes.into_iter().take(room));
        }
        for (index, (&count, &kept)) in other.counts.iter().zip(other.listed.iter()).enumerate() {
            // A log counts every fix it keeps, so `count >= kept`; `max` keeps to the letter.
            let count = count.max(kept);
            if count == 0 {
                continue;
            }
            let Some(&strategy) = ALL.get(index) else { continue };
            *self.counts.entry(strategy).or_insert(0) += u64::from(count);
            // Fixes the log counted but did not keep.
            self.omitted_fixes += usize::try_from(count - kept).unwrap_or(usize::MAX);
            let category = strategy.category();
            if let Err(at) = self.categories.binary_search(&category) {
                self.categories.insert(at, category);
            }
        }
    }

    /// True when nothing had to be fixed: the input was the value as is.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.counts.is_empty()
    }

    /// How many fixes applied in total.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// How many times `strategy` applied.
    #[must_use]
    pub fn count(&self, strategy: Strategy) -> u64 {
        self.counts.get(&strategy).copied().unwrap_or(0)
    }

    /// True when `strategy` applied at least once.
    #[must_use]
    pub fn has(&self, strategy: Strategy) -> bool {
        self.count(strategy) > 0
    }

    /// The categories joined by commas, for an HTTP header value (`extracted,fixed-syntax`);
    /// `none` when nothing was fixed.
    #[must_use]
    pub fn header_value(&self) -> String {
        if self.categories.is_empty() {
            return "none".to_owned();
        }
        let mut out = String::new();
        for (i, category) in self.categories.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(category.as_str());
        }
        out
    }
}

impl fmt::Display for Report {
    /// One line per fix: `  trailing_comma at byte 120`, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return writeln!(f, "no repair needed");
        }
        for fix in &self.fixes {
            write!(f, "  {} at byte {}", fix.strategy, fix.position)?;
            if let Some(detail) = &fix.detail {
                write!(f, ": {detail}")?;
            }
            writeln!(f)?;
        }
        if self.omitted_fixes > 0 {
            writeln!(f, "  … and {} more", self.omitted_fixes)?;
        }
        writeln!(f, "{} fixes: {}", self.total(), self.header_value())
    }
}

/// A cheap fix collector for the hot paths (parser, coercer): a bounded list plus counters.
#[derive(Debug, Clone)]
pub(crate) struct FixLog {
    pub(crate) fixes: Vec<Fix>,
    counts: [u32; ALL.len()],
    listed: [u32; ALL.len()],
}

impl Default for FixLog {
    fn default() -> Self {
        Self { fixes: Vec::new(), counts: [0; ALL.len()], listed: [0; ALL.len()] }
    }
}

impl FixLog {
    /// Whether the log has no fix, listed or counted.
    pub(crate) fn is_empty(&self) -> bool {
        self.fixes.is_empty() && self.counts == [0; ALL.len()]
    }

    pub(crate) fn push(&mut self, strategy: Strategy, position: usize) {
        self.push_detail(strategy, position, None);
    }

    pub(crate) fn push_detail(&mut self, strategy: Strategy, position: usize, detail: Option<String>) {
        let index = strategy.index();
        if let Some(count) = self.counts.get_mut(index) {
            *count = count.saturating_add(1);
        }
        if self.fixes.len() < MAX_LISTED_FIXES {
            if let Some(listed) = self.listed.get_mut(index) {
                *listed = listed.saturating_add(1);
            }
            self.fixes.push(Fix { strategy, position, detail });
        }
    }

    pub(crate) fn count(&self, strategy: Strategy) -> u32 {
        self.counts.get(strategy.index()).copied().unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u32 {
        self.counts.iter().fold(0u32, |acc, &c| acc.saturating_add(c))
    }

    /// Shifts every position by `offset` (fixes found in a sub-text).
    pub(crate) fn shift(&mut self, offset: usize) {
        for fix in &mut self.fixes {
            fix.position = fix.position.saturating_add(offset);
        }
    }

    pub(crate) fn append(&mut self, other: Self) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            // Appending to an empty log gives the other log, as it is.
            *self = other;
            return;
        }
        for fix in other.fixes {
            self.push_detail(fix.strategy, fix.position, fix.detail);
        }
        for (index, (&count, &listed)) in other.counts.iter().zip(other.listed.iter()).enumerate() {
            if count > listed
                && let Some(c) = self.counts.get_mut(index)
            {
                *c = c.saturating_add(count - listed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_match_serde() {
        for strategy in ALL {
            let json = serde_json::to_string(&strategy).unwrap();
            assert_eq!(json, format!("\"{}\"", strategy.as_str()));
        }
    }

    #[test]
    fn all_is_in_declaration_order() {
        for (i, strategy) in ALL.iter().enumerate() {
            assert_eq!(strategy.index(), i, "{strategy}");
        }
    }

    #[test]
    fn header_value_orders_and_dedupes() {
        let mut report = Report::new();
        assert_eq!(report.header_value(), "none");
        report.push(Strategy::CoerceNumber, 3, None);
        report.push(Strategy::TrailingComma, 1, None);
        report.push(Strategy::MissingComma, 2, None);
        assert_eq!(report.header_value(), "fixed-syntax,coerced-types");
        assert_eq!(report.total(), 3);
    }

    #[test]
    fn log_caps_the_list_but_counts_everything() {
        let mut log = FixLog::default();
        for i in 0..(MAX_LISTED_FIXES + 10) {
            log.push(Strategy::Comment, i);
        }
        let mut report = Report::new();
        report.absorb(log);
        assert_eq!(report.fixes.len(), MAX_LISTED_FIXES);
        assert_eq!(report.count(Strategy::Comment), (MAX_LISTED_FIXES + 10) as u64);
        assert_eq!(report.omitted_fixes, 10);
    }
}

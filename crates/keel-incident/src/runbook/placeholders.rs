//! Text that must never appear in a runbook: template syntax, unfilled values, and the words a
//! broken renderer or a lazy model leaves behind.

/// What counts as a placeholder (matched case-sensitively, except `todo`, `lorem ipsum`, `tbd`
/// and `insert`, matched in any case as whole words or phrases).
const EXACT: [&str; 8] = ["{{", "}}", "{%", "undefined", "[object Object]", "NaN", "<placeholder>", "null"];
const ANY_CASE: [&str; 4] = ["todo", "lorem ipsum", "tbd", "<insert"];

/// The first placeholder in `text`, if any.
pub fn find(text: &str) -> Option<&'static str> {
    if let Some(found) = EXACT.iter().find(|needle| contains_word(text, needle)) {
        return Some(found);
    }
    let lower = text.to_lowercase();
    ANY_CASE.iter().find(|needle| contains_word(&lower, needle)).copied()
}

/// Whether `needle` occurs in `text` not inside a longer word (for needles that start and end
/// with letters; others match anywhere).
fn contains_word(text: &str, needle: &str) -> bool {
    let wordy = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(needle).any(|(at, _)| {
        let first_is_letter = needle.chars().next().is_some_and(char::is_alphabetic);
        let last_is_letter = needle.chars().last().is_some_and(char::is_alphabetic);
        (!first_is_letter || !wordy(text[..at].chars().last()))
            && (!last_is_letter || !wordy(text[at + needle.len()..].chars().next()))
    })
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_placeholders_not_words_that_contain_them() {
        assert_eq!(find("restart {{ service }}"), Some("{{"));
        assert_eq!(find("value: undefined"), Some("undefined"));
        assert_eq!(find("TODO: fill in"), Some("todo"));
        assert_eq!(find("detail: null"), Some("null"));
        assert_eq!(find("[object Object]"), Some("[object Object]"));
        assert_eq!(find("to do now: nullable fields are fine, todos too"), None);
        assert_eq!(find("curl -sS http://127.0.0.1:11434/api/version"), None);
    }
}

//! Store URLs: the scheme picks the backend; query parameters keel reads (`schema`, `prefix`,
//! `synchronous`) are taken out before the rest goes to the backend's own URL parser.

use crate::StoreError;

/// A store URL without its password (`postgres://keel:***@db/keel`), for logs, messages and
/// status pages; URLs without one come back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A store URL cut into the part before `?` and its query parameters (raw, not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) base: String,
    params: Vec<(String, String)>,
}

impl Location {
    pub(crate) fn parse(url: &str) -> Self {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let params = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Location { base: base.to_owned(), params }
    }

    /// Removes parameter `name` and returns its percent-decoded value (the last one if repeated).
    pub(crate) fn take(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let mut found = None;
        self.params.retain(|(key, value)| {
            if key == name {
                found = Some(value.clone());
                false
            } else {
                true
            }
        });
        found.map(|value| percent_decode(&value)).transpose()
    }

    /// Parameters left after [`Location::take`].
    pub(crate) fn rest(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The URL without the parameters taken.
    pub(crate) fn to_url(&self) -> String {
        let mut url = self.base.clone();
        for (i, (key, value)) in self.params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            url.push_str(value);
        }
        url
    }
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| StoreError::invalid_url(format!("bad percent escape in '{text}'")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::invalid_url(format!("'{text}' is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact_url("postgres://keel:s3cret@db:5432/keel?schema=k"),
            "postgres://keel:***@db:5432/keel?schema=k"
        );
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("postgres://keel@db/keel"), "postgres://keel@db/keel");
        assert_eq!(redact_url("sqlite://keel.db"), "sqlite://keel.db");
        assert_eq!(redact_url("sqlite:///a@b/keel.db"), "sqlite:///a@b/keel.db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn takes_keel_parameters_and_keeps_the_rest() {
        let mut location = Location::parse("postgres://u:p@h/db?sslmode=disable&schema=t%5F1&connect_timeout=5");
        assert_eq!(location.take("schema").unwrap().as_deref(), Some("t_1"));
        assert_eq!(location.take("schema").unwrap(), None);
        assert_eq!(location.to_url(), "postgres://u:p@h/db?sslmode=disable&connect_timeout=5");
        assert_eq!(location.rest().count(), 2);
    }

    #[test]
    fn url_without_query() {
        let mut location = Location::parse("redis://127.0.0.1:6379/0");
        assert_eq!(location.take("prefix").unwrap(), None);
        assert_eq!(location.to_url(), "redis://127.0.0.1:6379/0");
        assert!(Location::parse("redis://h?prefix=%zz").take("prefix").is_err());
    }
}

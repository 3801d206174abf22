//! Which environment values may be shown, and how: one decision for every place that shows an
//! app's environment (`jlist`, `show`, and anything built on them) and for masking secrets in
//! app output (`mask_secrets`).
//!
//! - The runtime's own credentials (PM2 Plus keys, the web token) are never shown at all.
//! - Values read from secret files (`secrets:`, `NAME_FILE`) and keys matching a secret
//!   pattern (`*_KEY`, `*_SECRET`, `*_TOKEN`, `*PASSWORD*`, plus the app's `redact` list; `*`
//!   is a wildcard, case-insensitive) are shown as `[redacted]`.
//! - Everything else is shown as it is.

use std::collections::BTreeMap;

use crate::config::App;

/// What a hidden value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Key patterns whose values are secrets by name.
pub const DEFAULT_PATTERNS: &[&str] = &["*_KEY", "*_SECRET", "*_TOKEN", "*PASSWORD*"];

/// The runtime's own credentials: not even their presence is shown.
const NEVER: &[&str] = &["PM2_SECRET_KEY", "PM2_PUBLIC_KEY", "KEYMETRICS_SECRET", "KEYMETRICS_PUBLIC", "PM_RUNTIME_WEB_TOKEN"];

/// How one variable may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Left out.
    Never,
    /// Its key, with [`REDACTED`] as the value.
    Redacted,
    /// As it is.
    Plain,
}

/// The decision for `key`: `secret_keys` are the keys whose values came from secret files,
/// `patterns` the app's extra patterns (added to [`DEFAULT_PATTERNS`]).
pub fn shown(key: &str, secret_keys: &[String], patterns: &[String]) -> Shown {
    if NEVER.contains(&key) {
        Shown::Never
    } else if secret_keys.iter().any(|k| k == key)
        || DEFAULT_PATTERNS.iter().copied().chain(patterns.iter().map(String::as_str)).any(|p| matches(p, key))
    {
        Shown::Redacted
    } else {
        Shown::Plain
    }
}

/// An app's `env` as it may be shown.
pub fn env(app: &App) -> BTreeMap<String, String> {
    app.env
        .iter()
        .filter_map(|(k, v)| match shown(k, &app.secret_keys, &app.redact) {
            Shown::Never => None,
            Shown::Redacted => Some((k.clone(), REDACTED.to_string())),
            Shown::Plain => Some((k.clone(), v.clone())),
        })
        .collect()
}

/// The values `mask_secrets` hides in an app's output: every value that is not shown plainly,
/// line by line for multi-line values (output is masked a line at a time), longest first;
/// pieces shorter than 4 characters are left (masking `1` or `yes` would mangle everything).
pub fn secret_values(app: &App) -> Vec<String> {
    let mut out: Vec<String> = app
        .env
        .iter()
        .filter(|(k, _)| shown(k, &app.secret_keys, &app.redact) != Shown::Plain)
        .flat_map(|(_, v)| v.lines().map(str::trim).filter(|l| l.chars().count() >= 4).map(str::to_string).collect::<Vec<_>>())
        .collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    out.dedup();
    out
}

/// Replaces every occurrence of `secrets` (longest first) in `line` with [`REDACTED`]; `None`
/// when there is none (the line is used as it is).
pub fn mask(line: &[u8], secrets: &[String]) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for s in secrets {
        let hay = current.as_deref().unwrap_or(line);
        let finder = memchr::memmem::Finder::new(s.as_bytes());
        if finder.find(hay).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(hay.len());
        let mut at = 0;
        for i in finder.find_iter(hay) {
            out.extend_from_slice(&hay[at..i]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = i + s.len();
        }
        out.extend_from_slice(&hay[at..]);
        current = Some(out);
    }
    current
}

/// `*` matches any run of characters; case-insensitive.
fn matches(pattern: &str, key: &str) -> bool {
    let (p, k) = (pattern.to_ascii_uppercase(), key.to_ascii_uppercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == k;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !k.starts_with(first) || !k[first.len()..].ends_with(last) || k.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &k[first.len()..k.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let secret_keys = vec!["DB_CONN".to_string()];
        let extra = vec!["*_dsn".to_string(), "DATABASE_URL".to_string()];
        for (key, want) in [
            ("PM2_SECRET_KEY", Shown::Never),
            ("PM2_PUBLIC_KEY", Shown::Never),
            ("KEYMETRICS_SECRET", Shown::Never),
            ("PM_RUNTIME_WEB_TOKEN", Shown::Never),
            ("STRIPE_KEY", Shown::Redacted),
            ("api_key", Shown::Redacted),
            ("JWT_SECRET", Shown::Redacted),
            ("GITHUB_TOKEN", Shown::Redacted),
            ("PASSWORD", Shown::Redacted),
            ("DB_PASSWORD_HASH", Shown::Redacted),
            ("MysqlPassword", Shown::Redacted),
            ("DB_CONN", Shown::Redacted),
            ("SENTRY_DSN", Shown::Redacted),
            ("DATABASE_URL", Shown::Redacted),
            ("KEY", Shown::Plain),
            ("KEYBOARD", Shown::Plain),
            ("TOKENIZER", Shown::Plain),
            ("NODE_ENV", Shown::Plain),
            ("DATABASE_URL_2", Shown::Plain),
            ("PORT", Shown::Plain),
        ] {
            assert_eq!(shown(key, &secret_keys, &extra), want, "{key}");
        }
    }

    #[test]
    fn glob() {
        for (p, k, want) in [
            ("*", "", true),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AC", false),
            ("*AB*", "AB", true),
            ("*_A", "_A", true),
            ("*_A", "A", false),
        ] {
            assert_eq!(matches(p, k), want, "{p} {k}");
        }
    }

    #[test]
    fn masking() {
        let secrets = vec!["hunter22".to_string(), "hunter2".to_string()];
        assert_eq!(mask(b"nothing here", &secrets), None);
        assert_eq!(mask(b"pw=hunter2 and hunter22!", &secrets).unwrap(), b"pw=[redacted] and [redacted]!");
        assert_eq!(mask(b"hunter2hunter2", &secrets).unwrap(), b"[redacted][redacted]");
    }
}

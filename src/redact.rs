//! What of an environment may be shown to a person or a tool (`jlist`, `show`), and how.
//!
//! One rule for every reader: the PM2 Plus keys and the web token are never shown (not even
//! their names); values of variables that are secrets by their name (`*_KEY`, `*_SECRET`,
//! `*_TOKEN`, `*PASSWORD*`) are shown as [`REDACTED`]. Everything else is shown as it is.

/// What a secret's value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Variables that are never shown: the runtime's own credentials (PM2 Plus keys, by their
/// PM2 names and aliases, and the HTTP API token).
const NEVER: &[&str] = &["PM2_SECRET_KEY", "PM2_PUBLIC_KEY", "KEYMETRICS_SECRET", "KEYMETRICS_PUBLIC", "PM_RUNTIME_WEB_TOKEN"];

/// How one environment variable may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Left out entirely.
    Never,
    /// Its name with [`REDACTED`] as the value.
    Redacted,
    /// As it is.
    Plain,
}

/// How the variable `key` may be shown (its value does not matter to the rule).
pub fn env_var(key: &str) -> Shown {
    let upper = key.to_ascii_uppercase();
    if NEVER.contains(&upper.as_str()) {
        Shown::Never
    } else if ["_KEY", "_SECRET", "_TOKEN"].iter().any(|s| upper.ends_with(s)) || upper.contains("PASSWORD") {
        Shown::Redacted
    } else {
        Shown::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_shown_or_redacted() {
        let table = [
            ("PM2_SECRET_KEY", Shown::Never),
            ("PM2_PUBLIC_KEY", Shown::Never),
            ("KEYMETRICS_SECRET", Shown::Never),
            ("PM_RUNTIME_WEB_TOKEN", Shown::Never),
            ("pm_runtime_web_token", Shown::Never),
            ("STRIPE_API_KEY", Shown::Redacted),
            ("JWT_SECRET", Shown::Redacted),
            ("GITHUB_TOKEN", Shown::Redacted),
            ("DB_PASSWORD", Shown::Redacted),
            ("PASSWORD_FILE_HINT", Shown::Redacted),
            ("db_password", Shown::Redacted),
            ("PORT", Shown::Plain),
            ("KEYBOARD", Shown::Plain),
            ("SECRET", Shown::Plain),
            ("TOKENIZER", Shown::Plain),
            ("NODE_ENV", Shown::Plain),
        ];
        for (key, want) in table {
            assert_eq!(env_var(key), want, "{key}");
        }
    }
}

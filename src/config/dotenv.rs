//! The dotenv grammar of `env_file` (as the `dotenv`/`dotenv-expand` packages and Docker
//! Compose read it), pure: text in, variables out, or the line that is wrong and why.
//!
//! - `KEY=VALUE`, spaces around `=` allowed, an optional `export ` in front; blank lines and
//!   lines starting with `#` are skipped.
//! - Unquoted values are trimmed; ` #` (a `#` after whitespace) starts a comment.
//! - `'single'` and `` `backtick` `` quoted values are literal; `"double"` quoted values know
//!   `\n`, `\r`, `\t`, `\"`, `\\` and `\$`. Quoted values may span lines.
//! - `${VAR}`, `${VAR:-default}` and `$VAR` expand (unquoted and double-quoted values) from
//!   the keys above in the same file, else from `lookup` (earlier files, then the runtime's
//!   environment); an unknown variable is empty, as in a shell.

/// Why a line is wrong: (1-based line, message).
pub type LineError = (u32, String);

/// Parses `text`; the variables in file order (a later duplicate replaces an earlier one).
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, LineError> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = i as u32 + 1;
        let line = lines[i].trim_start_matches('\u{feff}').trim_start();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some(eq) = line.find('=') else {
            return Err((n, "expected KEY=VALUE".into()));
        };
        let key = line[..eq].trim();
        if !valid_key(key) {
            return Err((n, format!("{key:?} is not a variable name (letters, digits, _ and ., not starting with a digit)")));
        }
        let rest = line[eq + 1..].trim_start();
        let var = |name: &str| out.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| lookup(name));
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'' | '`')) => {
                let mut raw = String::new();
                let mut body = &rest[1..];
                let after = loop {
                    if let Some(end) = closing(body, q) {
                        raw.push_str(&body[..end]);
                        break &body[end + 1..];
                    }
                    raw.push_str(body);
                    raw.push('\n');
                    let Some(next) = lines.get(i) else {
                        return Err((n, format!("the value quoted with {q} is never closed")));
                    };
                    body = next;
                    i += 1;
                };
                let after = after.trim_start();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err((
                        i as u32,
                        format!("unexpected text after the closing {q}: {:?}", after.chars().take(20).collect::<String>()),
                    ));
                }
                if q == '"' { expand(&raw, true, &var) } else { raw }
            }
            _ => {
                let cut = rest
                    .char_indices()
                    .find(|&(j, c)| c == '#' && (j == 0 || rest[..j].ends_with([' ', '\t'])))
                    .map_or(rest.len(), |(j, _)| j);
                expand(rest[..cut].trim_end(), false, &var)
            }
        };
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The byte index of the quote `q` that closes a value in `s`; in double quotes a backslash
/// escapes the next character.
fn closing(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (j, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            return Some(j);
        }
    }
    None
}

/// Expands `${VAR}`, `${VAR:-default}` and `$VAR`; with `escapes` (double quotes) also the
/// backslash escapes. `\$` is a literal `$` in both.
fn expand(s: &str, escapes: bool, var: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((j, c)) = chars.next() {
        match c {
            '\\' => match chars.peek().map(|&(_, c)| c) {
                Some('$') => {
                    chars.next();
                    out.push('$');
                }
                Some(e) if escapes => {
                    chars.next();
                    match e {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        '"' | '\\' => out.push(e),
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                _ => out.push('\\'),
            },
            '$' => {
                let rest = &s[j + 1..];
                if let Some(inner) = rest.strip_prefix('{')
                    && let Some(end) = inner.find('}')
                {
                    let expr = &inner[..end];
                    let (name, default) = match expr.split_once(":-") {
                        Some((n, d)) => (n, Some(d)),
                        None => (expr, None),
                    };
                    let value = var(name).filter(|v| !v.is_empty() || default.is_none());
                    out.push_str(&value.unwrap_or_else(|| default.unwrap_or_default().to_string()));
                    // Skip `{expr}`.
                    for _ in 0..expr.chars().count() + 2 {
                        chars.next();
                    }
                } else {
                    let len: usize = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').map(char::len_utf8).sum();
                    let name = &rest[..len];
                    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                        out.push('$');
                    } else {
                        out.push_str(&var(name).unwrap_or_default());
                        for _ in 0..name.len() {
                            chars.next();
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Result<Vec<(String, String)>, LineError> {
        parse(text, &|k| match k {
            "HOME" => Some("/home/app".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    fn get(text: &str, key: &str) -> String {
        let vars = env(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        vars.into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} not in {text:?}")).1
    }

    #[test]
    fn grammar_table() {
        let table: &[(&str, &str, &str)] = &[
            ("A=1", "A", "1"),
            ("  A = spaced out  ", "A", "spaced out"),
            ("export A=exported", "A", "exported"),
            ("export\tA=tab", "A", "tab"),
            ("exporter=x", "exporter", "x"),
            ("A=", "A", ""),
            ("A=value # a comment", "A", "value"),
            ("A=#not-a-comment-start", "A", ""),
            ("A=a#b", "A", "a#b"),
            ("A='single # kept ${HOME}'", "A", "single # kept ${HOME}"),
            ("A=\"double # kept\" # comment", "A", "double # kept"),
            ("A=`back tick`", "A", "back tick"),
            ("A=\"line1\\nline2\\t\\\"q\\\" \\\\ \\$HOME\"", "A", "line1\nline2\t\"q\" \\ $HOME"),
            ("A='no \\n escapes'", "A", "no \\n escapes"),
            ("A=\"first\nsecond\n  third\"", "A", "first\nsecond\n  third"),
            ("A='-----BEGIN KEY-----\nabc\n-----END KEY-----'\nB=2", "A", "-----BEGIN KEY-----\nabc\n-----END KEY-----"),
            ("A=\"first\nsecond\"\nB=after", "B", "after"),
            ("A=${HOME}/x", "A", "/home/app/x"),
            ("A=$HOME/x", "A", "/home/app/x"),
            ("A=\"${HOME}\"", "A", "/home/app"),
            ("A=1\nB=${A}2", "B", "12"),
            ("A=${NOPE}", "A", ""),
            ("A=${NOPE:-fallback}", "A", "fallback"),
            ("A=${EMPTY:-fallback}", "A", "fallback"),
            ("A=${HOME:-fallback}", "A", "/home/app"),
            ("A=\\$HOME", "A", "$HOME"),
            ("A=cost $5", "A", "cost $5"),
            ("A=$", "A", "$"),
            ("# comment\n\n  # indented comment\nA=1", "A", "1"),
            ("A=1\r\nB=2\r\n", "B", "2"),
            ("A=1\nA=2", "A", "2"),
            ("A.B_C=dots", "A.B_C", "dots"),
            ("\u{feff}A=bom", "A", "bom"),
            ("A=x=y", "A", "x=y"),
        ];
        for (text, key, want) in table {
            assert_eq!(get(text, key), *want, "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let table: &[(&str, u32, &str)] = &[
            ("A=1\nnot a pair\n", 2, "expected KEY=VALUE"),
            ("A=1\n1A=2", 2, "is not a variable name"),
            ("A=1\nB C=2", 2, "is not a variable name"),
            ("A=1\nB=\"open\nstill open\n", 2, "never closed"),
            ("A='x' trailing", 1, "unexpected text after the closing '"),
            ("A=\"x\ny\" junk", 2, "unexpected text after the closing \""),
        ];
        for (text, line, msg) in table {
            let (l, m) = env(text).expect_err(text);
            assert_eq!(l, *line, "{text:?}: {m}");
            assert!(m.contains(msg), "{text:?}: {m}");
        }
    }
}

//! Which processes a verb's target names, by PM2's rules (`_operate` in its `lib/API.js`):
//! `all`; `/regex/` (matched against app names, anywhere in the name); a name, else a
//! namespace; a number is tried as a name, then a namespace, and only then as a pm_id.
//!
//! Pure: the table is passed in as `(pm_id, name, namespace)` rows, in pm_id order.

/// One row of the process table, as targets see it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub pm_id: u32,
    pub name: &'a str,
    pub namespace: &'a str,
}

/// Why a target names no process; the message names what was tried and the apps there are.
/// Every variant but [`TargetError::Regex`] means "nothing of that name" (HTTP: `404`).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{target}: not a valid regular expression: {source}")]
    Regex { target: String, source: Box<regex_automata::meta::BuildError> },
    #[error("no process whose app name matches {target} (known: {})", listed(.known))]
    NoMatch { target: String, known: Vec<String> },
    /// `numeric`: the target could have been a pm_id too.
    #[error("no {} named {target:?} (known: {})", if *.numeric { "process id, app or namespace" } else { "app or namespace" }, listed(.known))]
    NotFound { target: String, numeric: bool, known: Vec<String> },
    /// A verb on `all` when the runtime has no app (PM2 exits 1 then).
    #[error("no process found (the runtime has no apps)")]
    NoProcess,
    /// `scale`'s name is an app's name only.
    #[error("no app named {0:?}")]
    NoApp(String),
}

impl TargetError {
    /// The target names nothing there is (as opposed to a target that cannot be read).
    pub fn is_not_found(&self) -> bool {
        !matches!(self, TargetError::Regex { .. })
    }
}

/// The pm_ids `target` names, or why none.
pub fn select(target: &str, rows: &[Row]) -> Result<Vec<u32>, TargetError> {
    if target == "all" {
        return Ok(rows.iter().map(|r| r.pm_id).collect());
    }
    let ids: Vec<u32> = if let Some(pattern) = regex_of(target) {
        let re = regex_automata::meta::Regex::new(pattern)
            .map_err(|e| TargetError::Regex { target: target.to_string(), source: Box::new(e) })?;
        let ids: Vec<u32> = rows.iter().filter(|r| re.is_match(r.name)).map(|r| r.pm_id).collect();
        if ids.is_empty() {
            return Err(TargetError::NoMatch { target: target.to_string(), known: names(rows) });
        }
        return Ok(ids);
    } else {
        let by = |f: &dyn Fn(&Row) -> bool| -> Vec<u32> { rows.iter().filter(|r| f(r)).map(|r| r.pm_id).collect() };
        let mut ids = by(&|r| r.name == target);
        if ids.is_empty() {
            ids = by(&|r| r.namespace == target);
        }
        if ids.is_empty()
            && let Some(id) = pm_id_of(target)
        {
            ids = by(&|r| r.pm_id == id);
        }
        ids
    };
    if ids.is_empty() {
        return Err(TargetError::NotFound { target: target.to_string(), numeric: pm_id_of(target).is_some(), known: names(rows) });
    }
    Ok(ids)
}

/// `/…/` with something inside: the pattern between the slashes.
fn regex_of(target: &str) -> Option<&str> {
    target.strip_prefix('/')?.strip_suffix('/').filter(|p| !p.is_empty())
}

/// A target that PM2 reads as a number: digits, surrounding blanks allowed.
fn pm_id_of(target: &str) -> Option<u32> {
    target.trim().parse().ok()
}

/// The app names of the table, once each (rows of one app are adjacent).
fn names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().map(|r| r.name.to_string()).collect();
    names.dedup();
    names
}

fn listed(names: &[String]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row<'static>> {
        let r = |pm_id, name, namespace| Row { pm_id, name, namespace };
        vec![r(0, "api-users", "default"), r(1, "api-orders", "shop"), r(2, "455", "default"), r(3, "web", "7"), r(4, "worker", "default")]
    }

    #[test]
    fn targets_resolve_as_pm2_resolves_them() {
        let table: &[(&str, Result<&[u32], &str>)] = &[
            ("all", Ok(&[0, 1, 2, 3, 4])),
            ("web", Ok(&[3])),
            ("shop", Ok(&[1])),
            // A number is a name first, then a namespace, then a pm_id.
            ("455", Ok(&[2])),
            ("7", Ok(&[3])),
            ("4", Ok(&[4])),
            ("0", Ok(&[0])),
            (" 1 ", Ok(&[1])),
            // /regex/: anywhere in the name, anchors as written.
            ("/^api-/", Ok(&[0, 1])),
            ("/orders/", Ok(&[1])),
            ("/^w/", Ok(&[3, 4])),
            ("/^(web|455)$/", Ok(&[2, 3])),
            ("/nothing/", Err("no process whose app name matches /nothing/")),
            ("/(/", Err("/(/: not a valid regular expression")),
            ("9", Err("no process id, app or namespace named \"9\"")),
            ("nope", Err("no app or namespace named \"nope\"")),
            // A lone or empty pair of slashes is a name.
            ("/", Err("no app or namespace named \"/\"")),
            ("//", Err("no app or namespace named \"//\"")),
        ];
        for (target, want) in table {
            let got = select(target, &rows());
            match (want, &got) {
                (Ok(ids), Ok(g)) => assert_eq!(g.as_slice(), *ids, "{target}"),
                (Err(msg), Err(e)) => assert!(e.to_string().starts_with(msg), "{target}: {e}"),
                _ => panic!("{target}: {got:?}"),
            }
        }
        assert_eq!(select("all", &[]).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn refusals_carry_what_was_tried_and_whether_it_is_missing() {
        let e = select("nope", &rows()).unwrap_err();
        assert!(matches!(&e, TargetError::NotFound { target, numeric: false, known } if target == "nope" && known.len() == 5), "{e:?}");
        assert_eq!(e.to_string(), "no app or namespace named \"nope\" (known: api-users, api-orders, 455, web, worker)");
        assert!(e.is_not_found());
        assert!(matches!(select("9", &[]), Err(TargetError::NotFound { numeric: true, .. })));
        assert_eq!(select("9", &[]).unwrap_err().to_string(), "no process id, app or namespace named \"9\" (known: none)");
        let bad = select("/(/", &rows()).unwrap_err();
        assert!(matches!(bad, TargetError::Regex { .. }) && !bad.is_not_found(), "{bad:?}");
        assert!(TargetError::NoProcess.is_not_found() && TargetError::NoApp("x".into()).is_not_found());
    }
}

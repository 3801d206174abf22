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

/// The pm_ids `target` names, or why none (the message names what was tried).
pub fn select(target: &str, rows: &[Row]) -> Result<Vec<u32>, String> {
    if target == "all" {
        return Ok(rows.iter().map(|r| r.pm_id).collect());
    }
    let ids: Vec<u32> = if let Some(pattern) = regex_of(target) {
        let re = regex_automata::meta::Regex::new(pattern).map_err(|e| format!("{target}: not a valid regular expression: {e}"))?;
        let ids: Vec<u32> = rows.iter().filter(|r| re.is_match(r.name)).map(|r| r.pm_id).collect();
        if ids.is_empty() {
            return Err(format!("no process whose app name matches {target} (known: {})", known(rows)));
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
        let what = if pm_id_of(target).is_some() { "process id, app or namespace" } else { "app or namespace" };
        return Err(format!("no {what} named {target:?} (known: {})", known(rows)));
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

fn known(rows: &[Row]) -> String {
    let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    names.dedup();
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
                (Err(msg), Err(e)) => assert!(e.starts_with(msg), "{target}: {e}"),
                _ => panic!("{target}: {got:?}"),
            }
        }
        assert_eq!(select("all", &[]), Ok(vec![]));
    }
}

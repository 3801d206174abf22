//! The top-level `static` section (PM2's `_startJson`): each entry is an app running PM2's
//! static server (`script: serve`), configured through its `PM2_SERVE_*` env.
//!
//! ```yaml
//! static:
//!   - path: dist          # PM2_SERVE_PATH
//!     port: 8081          # PM2_SERVE_PORT; name defaults to static-page-server-<port>
//!     spa: true           # PM2_SERVE_SPA
//!     basic_auth: {username: u, password: p}
//! ```

use super::tree::{Node, Value};
use super::validate::{RawApp, Reporter, join};

/// One app per entry of `static` (a list, or a single mapping).
pub fn static_apps(node: &Node, rep: &mut Reporter) -> Vec<RawApp> {
    let entries: Vec<(String, &Node)> = match &node.value {
        Value::Seq(items) => items.iter().enumerate().map(|(i, n)| (format!("static[{i}]"), n)).collect(),
        Value::Map(_) => vec![("static".to_string(), node)],
        Value::Null => Vec::new(),
        _ => {
            rep.error(node.pos, "static", format!("expected a list of static servers, got {}", node.describe()));
            Vec::new()
        }
    };
    entries.into_iter().filter_map(|(path, n)| one(&path, n, rep)).collect()
}

/// The scalar text of a value (numbers and booleans as JavaScript prints them).
fn text(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn one(path: &str, node: &Node, rep: &mut Reporter) -> Option<RawApp> {
    let Value::Map(entries) = &node.value else {
        rep.error(node.pos, path, format!("expected a static server (a mapping with path and port), got {}", node.describe()));
        return None;
    };
    let mut app = RawApp { path: path.to_string(), script: Some(("serve".to_string(), node.pos)), ..Default::default() };
    let mut name = None;
    let mut port = "8080".to_string();
    for (k, v) in entries {
        let key = join(path, &k.name);
        let var = match k.name.as_str() {
            "name" => {
                name = text(v);
                continue;
            }
            "path" => "PM2_SERVE_PATH",
            "port" => "PM2_SERVE_PORT",
            "host" => "PM2_SERVE_HOST",
            "spa" => "PM2_SERVE_SPA",
            "homepage" => "PM2_SERVE_HOMEPAGE",
            "basic_auth" => {
                app.env.insert("PM2_SERVE_BASIC_AUTH".into(), "true".into());
                for (field, var) in [("username", "PM2_SERVE_BASIC_AUTH_USERNAME"), ("password", "PM2_SERVE_BASIC_AUTH_PASSWORD")] {
                    if let Some(s) = v.get(field).and_then(text) {
                        app.env.insert(var.into(), s);
                    }
                }
                continue;
            }
            "ftp" | "directory" | "monitor" => {
                rep.warn(k.pos, &key, "not supported by pm-runtime's static server; ignored");
                continue;
            }
            _ => {
                rep.warn(k.pos, &key, "unknown key (ignored)");
                continue;
            }
        };
        match text(v) {
            Some(s) => {
                if var == "PM2_SERVE_PORT" {
                    port = s.clone();
                }
                app.env.insert(var.into(), s);
            }
            None => rep.error(v.pos, &key, format!("expected a string or a number, got {}", v.describe())),
        }
    }
    app.name = Some(name.unwrap_or_else(|| format!("static-page-server-{port}")));
    Some(app)
}

#[cfg(test)]
mod tests {
    use super::super::tree::parse_yaml;
    use super::*;

    #[test]
    fn entries_become_serve_apps() {
        let root = parse_yaml(
            "- path: dist\n  port: 8081\n  spa: true\n  basic_auth: {username: u, password: p}\n- port: 9000\n  name: docs\n  ftp: true\n",
        )
        .unwrap();
        let mut rep = Reporter::new("f.yml");
        let apps = static_apps(&root, &mut rep);
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].name.as_deref(), Some("static-page-server-8081"));
        assert_eq!(apps[0].script.as_ref().unwrap().0, "serve");
        let env: Vec<(&str, &str)> = apps[0].env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("PM2_SERVE_BASIC_AUTH", "true"),
                ("PM2_SERVE_BASIC_AUTH_PASSWORD", "p"),
                ("PM2_SERVE_BASIC_AUTH_USERNAME", "u"),
                ("PM2_SERVE_PATH", "dist"),
                ("PM2_SERVE_PORT", "8081"),
                ("PM2_SERVE_SPA", "true")
            ]
        );
        assert_eq!(apps[1].name.as_deref(), Some("docs"));
        assert_eq!(rep.warnings.len(), 1, "ftp is not supported: {:?}", rep.warnings);
        let root = parse_yaml("3").unwrap();
        static_apps(&root, &mut rep);
        assert_eq!(rep.errors.len(), 1);
    }
}

//! What an app's environment gets from files: `env_file` (dotenv, see `dotenv`) and secret
//! files (`secrets:`, and `NAME_FILE` pointing into a secrets mount).
//!
//! Precedence, low to high (documented in the README): the runtime's environment, PM2's
//! per-process variables, `env_file` (in list order), `env`, `env_<name>` (`--env`), secret
//! files, then `port`. Secret values are read when the configuration is loaded (at start,
//! and again by `startOrRestart`/`reload` of the file); their keys are remembered so that
//! nothing the runtime shows contains them (`crate::redact`).

use std::collections::BTreeMap;
use std::path::Path;

use super::resolve::normalize;
use super::tree::Pos;
use super::validate::{EnvFile, Reporter, join};
use super::{Problem, validate};

/// Where `NAME_FILE` is read as a secret without being asked: Docker's and Compose's secrets
/// (`/run/secrets`) and Kubernetes' service account (`/var/run/secrets`). A `*_FILE` variable
/// pointing anywhere else (`LOG_FILE`, `SSL_CERT_FILE`) is an ordinary variable; name such a
/// secret in `secrets:` instead.
const SECRET_DIRS: &[&str] = &["/run/secrets/", "/var/run/secrets/"];

/// A secret file larger than this is refused (a mistake, not a secret).
const MAX_SECRET: u64 = 1 << 20;

/// The variables of an app's env files, in order (a later file wins). `${VAR}` in a file sees
/// the files before it, then `var` (the runtime's environment).
pub fn env_files(files: &[EnvFile], cwd: &Path, var: &dyn Fn(&str) -> Option<String>, rep: &mut Reporter) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in files {
        let path = normalize(&cwd.join(&f.path));
        let text = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    rep.error(f.pos, &f.key, format!("{} is not UTF-8 text", path.display()));
                    continue;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !f.required => continue,
            Err(e) => {
                let hint =
                    if e.kind() == std::io::ErrorKind::NotFound { " (mark it optional with { path: …, required: false })" } else { "" };
                rep.error(f.pos, &f.key, format!("cannot read env file {}: {e}{hint}", path.display()));
                continue;
            }
        };
        let lookup = |k: &str| out.get(k).cloned().or_else(|| var(k));
        match super::dotenv::parse(&text, &lookup) {
            Ok(vars) => {
                for (k, v) in vars {
                    if v.contains('\0') {
                        rep.errors.push(Problem::new(
                            Some(&path.display().to_string()),
                            None,
                            Some(&f.key),
                            format!("{k}: value contains a NUL byte"),
                        ));
                        continue;
                    }
                    out.insert(k, v);
                }
            }
            Err((line, msg)) => {
                rep.errors.push(Problem::new(Some(&path.display().to_string()), Some(Pos { line, col: 1 }), Some(&f.key), msg));
            }
        }
    }
    out
}

/// Adds the secret files to `env`: every `NAME_FILE` that points into a secrets mount (when
/// `NAME` is not set otherwise), then `secrets:` (which wins). Returns the keys set.
pub fn secret_files(
    env: &mut BTreeMap<String, String>,
    secrets: &BTreeMap<String, (String, Option<Pos>)>,
    app_path: &str,
    cwd: &Path,
    rep: &mut Reporter,
) -> Vec<String> {
    let mut keys = Vec::new();
    let conventional: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_suffix("_FILE").filter(|n| !n.is_empty())?;
            (SECRET_DIRS.iter().any(|d| v.starts_with(d)) && !env.contains_key(name)).then(|| (name.to_string(), v.clone()))
        })
        .collect();
    for (name, file) in conventional {
        let key = join(&join(app_path, "env"), &format!("{name}_FILE"));
        if let Some(value) = read_secret(Path::new(&file), None, &key, rep) {
            env.insert(name.clone(), value);
            keys.push(name);
        }
    }
    for (name, (file, pos)) in secrets {
        let key = join(&join(app_path, "secrets"), name);
        if let Some(value) = read_secret(&normalize(&cwd.join(file)), *pos, &key, rep) {
            env.insert(name.clone(), value);
            keys.retain(|k| k != name);
            keys.push(name.clone());
        }
    }
    keys
}

/// A secret file's content without its trailing newline. Errors never show the content.
fn read_secret(path: &Path, pos: Option<Pos>, key: &str, rep: &mut Reporter) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_SECRET + 1).read_to_end(&mut bytes));
    let problem = match read {
        Err(e) => Some(format!("cannot read secret file {}: {e}", path.display())),
        Ok(n) if n as u64 > MAX_SECRET => Some(format!("secret file {} is larger than 1 MiB", path.display())),
        Ok(_) if bytes.contains(&0) => Some(format!("secret file {} contains a NUL byte (an environment value cannot)", path.display())),
        Ok(_) => None,
    };
    if let Some(p) = problem {
        rep.error(pos, key, p);
        return None;
    }
    let Ok(mut text) = String::from_utf8(bytes) else {
        rep.error(pos, key, format!("secret file {} is not UTF-8 text", path.display()));
        return None;
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if key.len() + text.len() + 1 >= validate::MAX_ARG_STRLEN {
        rep.error(pos, key, format!("secret file {} is too long for one environment variable", path.display()));
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_in_order_optional_and_errors_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.env"), "A=1\nB=${HOME}/b\n").unwrap();
        std::fs::write(dir.path().join("b.env"), "A=2\nC=${A}${B}\n").unwrap();
        std::fs::write(dir.path().join("bad.env"), "OK=1\n\noops\n").unwrap();
        let f = |p: &str, required| EnvFile { path: p.into(), required, pos: None, key: "apps[0].env_file".into() };
        let var = |k: &str| (k == "HOME").then(|| "/h".to_string());
        let mut rep = Reporter::new("e.yml");
        let env = env_files(&[f("a.env", true), f("b.env", true), f("none.env", false)], dir.path(), &var, &mut rep);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "2"), ("B", "/h/b"), ("C", "2/h/b")]);

        let mut rep = Reporter::new("e.yml");
        env_files(&[f("none.env", true), f("bad.env", true)], dir.path(), &var, &mut rep);
        let errors: Vec<String> = rep.errors.iter().map(|p| p.to_string()).collect();
        assert!(errors[0].starts_with("e.yml: apps[0].env_file: cannot read env file ") && errors[0].contains("none.env"), "{errors:?}");
        assert_eq!(errors[1], format!("{}:3:1: apps[0].env_file: expected KEY=VALUE", dir.path().join("bad.env").display()));
    }

    #[test]
    fn secret_files_by_name_file_and_secrets_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), "s3cr3t\n").unwrap();
        std::fs::write(dir.path().join("api"), "line1\r\n").unwrap();
        let mut env: BTreeMap<String, String> =
            [("LOG_FILE", "/var/log/app.log"), ("PLAIN", "x")].map(|(k, v)| (k.into(), v.into())).into();
        let secrets: BTreeMap<String, (String, Option<Pos>)> =
            [("DB_PASSWORD".to_string(), ("db".to_string(), None)), ("API".into(), ("api".into(), None))].into();
        let mut rep = Reporter::new("e.yml");
        let keys = secret_files(&mut env, &secrets, "apps[0]", dir.path(), &mut rep);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(keys, ["API", "DB_PASSWORD"]);
        assert_eq!(env["DB_PASSWORD"], "s3cr3t");
        assert_eq!(env["API"], "line1");
        assert!(!env.contains_key("LOG"), "a *_FILE outside a secrets mount is an ordinary variable");

        // NAME_FILE into /run/secrets: read (here a missing one, to see the error without content).
        let mut env: BTreeMap<String, String> = [("TOKEN_FILE".to_string(), "/run/secrets/pm-runtime-test-missing".to_string())].into();
        let mut rep = Reporter::new("e.yml");
        secret_files(&mut env, &BTreeMap::new(), "apps[0]", dir.path(), &mut rep);
        assert_eq!(rep.errors.len(), 1);
        assert!(
            rep.errors[0]
                .to_string()
                .starts_with("e.yml: apps[0].env.TOKEN_FILE: cannot read secret file /run/secrets/pm-runtime-test-missing")
        );
    }
}

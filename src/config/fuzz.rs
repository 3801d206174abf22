//! Property tests standing in for fuzz targets (cargo-fuzz needs a nightly toolchain): the
//! ecosystem loaders (YAML, JSON, the JSON the JS loader prints) fed hostile documents must
//! return a config or errors, never panic. Case counts follow `PROPTEST_CASES` (256 by
//! default, so the suite stays fast; `bench/fuzz.sh` runs them long). Failures found are kept
//! by proptest in `proptest-regressions/` and replayed first on every run.

use super::*;
use proptest::prelude::*;

/// Keys of PM2's schema (the validator's own lists) and some that are not, so documents reach
/// every checker.
static KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let odd = ["env_production", "exec", "out", "error", "log", "pid", "instancez", "", "0", "apps"];
    validate::EFFECTIVE_KEYS.iter().chain(validate::IGNORED_KEYS).copied().chain(odd).collect()
});

/// Scalars that tend to break parsers and converters.
const SCALARS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1.5",
    "1e400",
    "-1e400",
    "NaN",
    ".inf",
    "9223372036854775808",
    "18446744073709551616",
    "true",
    "false",
    "null",
    "~",
    "''",
    "\"\"",
    "\"\\0\"",
    "\"a\\nb\"",
    "\"\\u001b[2J\"",
    "max",
    "-3",
    "10M",
    "0M",
    "1G",
    "5s",
    "3h",
    "SIGKILL",
    "SIGFOO",
    "0 3 * * *",
    "61 * * * *",
    "a.sh",
    "/",
    ".",
    "..",
    "~/x",
    "/dev/null",
    "NULL",
    "[]",
    "{}",
    "[1, \"a\", null]",
    "{a: 1}",
    "\"x\"",
    "*anchor",
    "&anchor 1",
    "!!binary aGk=",
    "|\n  text",
    "'quoted'",
    "@",
    "%",
    "`",
];

fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\0', '\n', '\r', '\t', '"', '\'', ':', '-', '[', ']', '{', '}', ',', '#', '\\', '\u{85}', '\u{feff}', 'é', '\u{1b}',
    ]);
    prop::collection::vec(prop_oneof![3 => any::<char>(), 2 => special, 3 => prop::char::range('a', 'z')], 0..24)
        .prop_map(|v| v.into_iter().collect())
}

/// A YAML value: a scalar from the list, a quoted random text, or a small flow collection.
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => prop::sample::select(SCALARS).prop_map(str::to_string),
        2 => text().prop_map(|t| serde_json::to_string(&t).unwrap_or_default()),
        1 => text(),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS.clone()), inner), 0..4)
                .prop_map(|v| format!("{{{}}}", v.iter().map(|(k, v)| format!("{k:?}: {v}")).collect::<Vec<_>>().join(", "))),
        ]
    })
}

/// A block-style ecosystem document with 0-3 apps of random keys and values.
fn yaml_doc() -> impl Strategy<Value = String> {
    let app = prop::collection::vec((prop::sample::select(KEYS.clone()), yaml_value()), 0..8);
    (prop::collection::vec(app, 0..4), any::<bool>()).prop_map(|(apps, with_script)| {
        let mut s = String::from("apps:\n");
        for kv in apps {
            s.push_str("  -");
            if with_script {
                s.push_str(" script: a.sh\n   ");
            }
            for (k, v) in kv {
                s.push_str(&format!(" {k}: {}\n   ", v.replace('\n', " ")));
            }
            s.push('\n');
        }
        s
    })
}

/// A JSON value of any shape.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<u64>().prop_map(J::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(J::Null, J::Number)),
        text().prop_map(J::String),
        prop::sample::select(SCALARS).prop_map(|s| J::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(J::Array),
            prop::collection::vec((prop_oneof![prop::sample::select(KEYS.clone()).prop_map(str::to_string), text()], inner), 0..6)
                .prop_map(|v| J::Object(v.into_iter().collect())),
        ]
    })
}

/// An ecosystem-shaped JSON value: `{"apps": [...]}` with random apps (often with a script).
fn json_ecosystem() -> impl Strategy<Value = serde_json::Value> {
    let app =
        (prop::collection::vec((prop::sample::select(KEYS.clone()), json_value()), 0..8), any::<bool>()).prop_map(|(kv, with_script)| {
            let mut m: serde_json::Map<String, serde_json::Value> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if with_script {
                m.insert("script".into(), "a.sh".into());
            }
            serde_json::Value::Object(m)
        });
    prop_oneof![
        3 => prop::collection::vec(app, 0..4).prop_map(|apps| serde_json::json!({ "apps": apps })),
        1 => json_value(),
    ]
}

/// JSON text with the extras PM2 tolerates and some damage: comments, trailing commas, cuts.
fn json_text() -> impl Strategy<Value = String> {
    (json_ecosystem(), 0u8..6, any::<prop::sample::Index>(), text()).prop_map(|(v, how, at, junk)| {
        let s = if how % 2 == 0 { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap_or_default();
        let cut = at.index(s.len() + 1);
        let cut = (0..=cut).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        match how {
            0 | 1 => s,
            2 => format!("// head\n{}", s.replace("\n", " /* c */\n").replace("]", ",]")),
            3 => s[..cut].to_string(),
            4 => format!("{}{junk}{}", &s[..cut], &s[cut..]),
            _ => s.replace('"', "'"),
        }
    })
}

/// A fixture dir with `a.sh` and a PATH with fake interpreters, loaded through the real
/// pipeline (resolution included).
struct Fixture {
    dir: tempfile::TempDir,
    path: String,
}

impl Fixture {
    fn new() -> Fixture {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in ["node", "bash", "sh", "python3"] {
            std::fs::write(bin.join(b), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(bin.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("a.sh"), "#!/bin/sh\n").unwrap();
        let path = bin.display().to_string();
        Fixture { dir, path }
    }

    fn load(&self, name: &str, body: &str) -> Result<Ecosystem, ConfigError> {
        std::fs::write(self.dir.path().join(name), body).unwrap();
        // No node: a JSON file that is not JSON must not be handed to a real evaluator here.
        let path = self.path.clone();
        let var = move |k: &str| (k == "PATH").then(|| path.clone());
        let host = Host { base_dir: self.dir.path().to_path_buf(), var: &var };
        load_with(Path::new(name), &Overrides::default(), &host)
    }
}

/// Errors are lines that name the file (or a flag); nothing panics.
fn check(name: &str, r: Result<Ecosystem, ConfigError>) -> Result<(), TestCaseError> {
    match r {
        Ok(eco) => {
            for a in &eco.apps {
                prop_assert!(!a.name.chars().any(char::is_control), "a control character in a name: {:?}", a.name);
            }
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(p.starts_with(name) || p.starts_with('-'), "problem without the file: {p}");
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn fuzz_yaml_loader(doc in prop_oneof![3 => yaml_doc(), 1 => text()]) {
        let fx = Fixture::new();
        check("eco.yml", fx.load("eco.yml", &doc))?;
    }

    #[test]
    fn fuzz_json_loader(doc in json_text()) {
        let blanked = tree::blank_json_extras(&doc);
        prop_assert_eq!(blanked.chars().count(), doc.chars().count());
        prop_assert_eq!(blanked.lines().count(), doc.lines().count());
        let fx = Fixture::new();
        let r = fx.load("eco.json", &doc);
        // With a fake `node` on PATH, a non-JSON file ends as a syntax error naming the file.
        check("eco.json", r)?;
    }

    #[test]
    fn fuzz_js_loader_output(v in json_ecosystem(), noise in text()) {
        let stdout = format!("{noise}\n{}{v}\n", js::MARKER);
        let parsed = js::exported_json(&stdout);
        // (Equal up to float rounding: serde_json's default float parser may be 1 ulp off.)
        prop_assert!(matches!(parsed, Some(Ok(ref got)) if got.to_string().len().abs_diff(v.to_string().len()) < 64), "{:?}", parsed);
        let root = Node::from_json(&v);
        let mut rep = Reporter::new("e.config.js");
        let doc = validate::locate_apps(&root, &mut rep);
        for (p, n) in &doc.apps {
            let _ = validate::validate_app(p, n, &mut rep);
        }
        for e in &rep.errors {
            prop_assert!(e.starts_with("e.config.js"), "{e}");
        }
    }
}

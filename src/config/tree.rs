//! The spanned generic tree every config format is parsed into before validation.
//!
//! YAML goes through serde-saphyr with [`serde_saphyr::Spanned`] on every node and key, so each
//! value carries the `line:col` it came from. JSON is YAML 1.2 flow syntax, so the same parser
//! serves `.json` files once `//`/`/* */` comments and trailing commas are blanked out (replaced by
//! spaces, which keeps every position). Values produced by node (`.config.js`) come in as
//! `serde_json::Value` and get no positions.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A 1-based source position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One value of the tree with the position it was read from (`None` for JS configs).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Option<Pos>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order (duplicates kept; the validator decides).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Option<Pos>,
}

/// A syntax error with its position when the parser knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Option<Pos>,
    pub message: String,
    /// A key given twice: well-formed, but refused (node must not be asked to read it instead).
    pub duplicate: bool,
}

impl Node {
    pub fn new(value: Value) -> Self {
        Node { pos: None, value }
    }

    /// Looks a key up in a mapping (first occurrence).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short description of the value for error messages: `"four"`, `3.5`, `a list`, …
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The value as plain JSON (for `ignored`, `watch_options`, and stringified env objects).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    m.insert(k.name.clone(), v.to_json());
                }
                J::Object(m)
            }
        }
    }

    /// Builds a position-less tree from JSON (the output of node for JS configs).
    pub fn from_json(v: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(Node::from_json).collect()),
            J::Object(m) => Value::Map(m.iter().map(|(k, v)| (Key { name: k.clone(), pos: None }, Node::from_json(v))).collect()),
        };
        Node::new(value)
    }
}

fn pos_of(loc: &serde_saphyr::Location) -> Option<Pos> {
    let (line, col) = (loc.line(), loc.column());
    (line > 0).then_some(Pos { line: line as u32, col: col as u32 })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Value> = Spanned::deserialize(d)?;
        Ok(Node { pos: pos_of(&s.referenced), value: s.value })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }
    fn visit_i128<E>(self, i: i128) -> Result<Value, E> {
        Ok(i64::try_from(i).map_or(Value::Float(i as f64), Value::Int))
    }
    fn visit_u128<E>(self, u: u128) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(b).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            let name = match &k.value {
                Value::Str(s) => s.clone(),
                Value::Null => String::new(),
                _ => k.to_json().to_string(),
            };
            entries.push((Key { name, pos: k.pos }, v));
        }
        Ok(Value::Map(entries))
    }
}

/// Parses YAML text into a spanned tree.
pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Null));
    }
    // js-yaml 4 (PM2's parser) follows the YAML 1.2 core schema: `yes`/`on` are strings.
    let opts = serde_saphyr::options! { strict_booleans: true, with_snippet: false };
    let node = serde_saphyr::from_str_with_options::<Node>(text, opts).map_err(|e| {
        let pos = e.location().as_ref().and_then(pos_of);
        let message = strip_location_prefix(&e.without_snippet().to_string());
        SyntaxError { pos, duplicate: message.starts_with("duplicate key "), message }
    })?;
    // The parser refuses duplicates in block mappings only; flow mappings (`{…}`, so every
    // JSON object) get the same rule here.
    match first_duplicate(&node) {
        Some(k) => Err(SyntaxError { pos: k.pos, message: format!("duplicate key {:?}", k.name), duplicate: true }),
        None => Ok(node),
    }
}

/// The first key (in document order) that repeats an earlier key of the same mapping.
fn first_duplicate(node: &Node) -> Option<&Key> {
    match &node.value {
        Value::Map(entries) => {
            let mut seen = std::collections::HashSet::new();
            for (k, v) in entries {
                if !seen.insert(k.name.as_str()) {
                    return Some(k);
                }
                if let Some(d) = first_duplicate(v) {
                    return Some(d);
                }
            }
            None
        }
        Value::Seq(items) => items.iter().find_map(first_duplicate),
        _ => None,
    }
}

/// serde-saphyr writes positions into its messages (`line N column M: …`, `… at line N, column
/// M`); we print positions ourselves, so they are removed, and library hints are reworded.
fn strip_location_prefix(msg: &str) -> String {
    let mut s = msg.lines().next().unwrap_or(msg).trim().to_string();
    if let Some(rest) = s.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        s = rest[idx + 2..].to_string();
    }
    if let Some(i) = s.rfind(" at line ")
        && s[i..].contains("column")
    {
        s.truncate(i);
    }
    if let Some(rest) = s.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set DuplicateKeyPolicy").next().unwrap_or(rest);
        s = format!("duplicate key {key:?}");
    }
    s
}

/// Whether `text` is JSON once comments and trailing commas are blanked (a duplicate key is
/// an error, with its position). Anything else in a `.json` file is for PM2 a JavaScript
/// expression.
pub fn is_json(text: &str) -> Result<bool, SyntaxError> {
    match super::strict_json::from_str(&blank_json_extras(text)) {
        Ok(_) => Ok(true),
        Err(e) if e.is_data() && e.to_string().starts_with("duplicate key ") => Err(SyntaxError {
            pos: Some(Pos { line: e.line() as u32, col: e.column() as u32 }),
            duplicate: true,
            message: strip_json_location(&e.to_string()),
        }),
        Err(_) => Ok(false),
    }
}

/// Parses JSON the way PM2 tolerates it (comments, trailing commas), keeping positions.
pub fn parse_lenient_json(text: &str) -> Result<Node, SyntaxError> {
    let blanked = blank_json_extras(text);
    match parse_yaml(&blanked) {
        Ok(n) => Ok(n),
        Err(yaml_err) => {
            // serde_json's message is clearer for JSON; prefer it when it also fails.
            match super::strict_json::from_str(&blanked) {
                Err(e) if e.line() > 0 => {
                    let message = strip_json_location(&e.to_string());
                    Err(SyntaxError {
                        pos: Some(Pos { line: e.line() as u32, col: e.column() as u32 }),
                        duplicate: e.is_data() && message.starts_with("duplicate key "),
                        message,
                    })
                }
                Ok(v) => Ok(Node::from_json(&v)),
                Err(_) => Err(yaml_err),
            }
        }
    }
}

fn strip_json_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Replaces `//…` and `/*…*/` comments and trailing commas (before `]`/`}`) with spaces.
/// Newlines inside block comments are kept so line numbers stay right.
pub fn blank_json_extras(text: &str) -> String {
    let mut out: Vec<char> = text.chars().collect();
    let n = out.len();
    let mut i = 0;
    let mut in_str: Option<char> = None;
    // Index of the last comma seen outside strings with only whitespace/comments after it.
    let mut pending_comma: Option<usize> = None;
    while i < n {
        let c = out[i];
        if let Some(q) = in_str {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == q {
                in_str = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' => {
                in_str = Some(c);
                pending_comma = None;
            }
            '/' if i + 1 < n && out[i + 1] == '/' => {
                while i < n && out[i] != '\n' {
                    out[i] = ' ';
                    i += 1;
                }
                continue;
            }
            '/' if i + 1 < n && out[i + 1] == '*' => {
                out[i] = ' ';
                out[i + 1] = ' ';
                i += 2;
                while i < n && !(out[i] == '*' && i + 1 < n && out[i + 1] == '/') {
                    if out[i] != '\n' {
                        out[i] = ' ';
                    }
                    i += 1;
                }
                if i < n {
                    out[i] = ' ';
                    if i + 1 < n {
                        out[i + 1] = ' ';
                    }
                    i += 2;
                }
                continue;
            }
            ',' => pending_comma = Some(i),
            ']' | '}' => {
                if let Some(p) = pending_comma.take() {
                    out[p] = ' ';
                }
            }
            c if c.is_whitespace() => {}
            _ => pending_comma = None,
        }
        i += 1;
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_positions_for_keys_and_values() {
        let n = parse_yaml("apps:\n  - name: a\n    instances: four\n").unwrap();
        let apps = n.get("apps").unwrap();
        let Value::Seq(items) = &apps.value else { panic!() };
        let Value::Map(entries) = &items[0].value else { panic!() };
        let (k, v) = &entries[1];
        assert_eq!(k.name, "instances");
        assert_eq!(k.pos, Some(Pos { line: 3, col: 5 }));
        assert_eq!(v.pos, Some(Pos { line: 3, col: 16 }));
        assert_eq!(v.value, Value::Str("four".into()));
    }

    #[test]
    fn yaml_scalars() {
        let n = parse_yaml("a: 3000\nb: \"3000\"\nc: true\nd: yes\ne:\nf: -2\ng: 1.5\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(3000));
        assert_eq!(n.get("b").unwrap().value, Value::Str("3000".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("d").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Int(-2));
        assert_eq!(n.get("g").unwrap().value, Value::Float(1.5));
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let e = parse_yaml("apps:\n  - name: a\n   bad: [\n").unwrap_err();
        assert!(e.pos.is_some(), "{e:?}");
        assert!(!e.message.starts_with("line "), "{e:?}");
        assert!(!e.message.contains("column"), "{e:?}");
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.message, "duplicate key \"a\"");
        assert_eq!(e.pos, Some(Pos { line: 2, col: 1 }));
    }

    #[test]
    fn blanking_keeps_positions() {
        let src = "{\n  // c\n  \"a\": \"x//y\", /* b\n */ \"b\": [1, 2,],\n}\n";
        let out = blank_json_extras(src);
        assert_eq!(out.len(), src.len());
        assert_eq!(out.lines().count(), src.lines().count());
        assert!(out.contains("\"x//y\""));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["b"][1], 2);
    }

    #[test]
    fn lenient_json_with_positions() {
        let src = "{\n  \"apps\": [\n    { \"script\": \"a.js\", // main\n      \"instances\": \"four\", },\n  ],\n}\n";
        let n = parse_lenient_json(src).unwrap();
        let Value::Seq(items) = &n.get("apps").unwrap().value else { panic!() };
        let v = items[0].get("instances").unwrap();
        assert_eq!(v.pos, Some(Pos { line: 4, col: 20 }));
    }

    #[test]
    fn json_quirks() {
        let src = "{\n\t\"apps\": [\n\t\t{\"script\": \"a\\/b.js\", \"name\": \"caf\\u00e9\", \"n\": 12345678901234567890}\n\t]\n}\n";
        let n = parse_lenient_json(src).unwrap_or_else(|e| panic!("{e:?}"));
        let Value::Seq(items) = &n.get("apps").unwrap().value else { panic!() };
        assert_eq!(items[0].get("script").unwrap().value, Value::Str("a/b.js".into()));
        assert_eq!(items[0].get("name").unwrap().value, Value::Str("café".into()));
    }

    #[test]
    fn duplicate_keys_in_json_are_errors_like_in_yaml() {
        // Through the YAML flow parser…
        let e = parse_lenient_json("{\"apps\": [{\"name\": \"a\",\n  \"name\": \"b\", \"script\": \"a.sh\"}]}").unwrap_err();
        assert_eq!((e.pos.map(|p| p.line), e.message.as_str()), (Some(2), "duplicate key \"name\""));
        // …and through serde_json when YAML cannot read it (a tab before a key).
        let e = parse_lenient_json("{\n\t\"apps\": [{\"name\": \"a\",\n\t\"name\": \"b\"}]}").unwrap_err();
        assert_eq!(e.message, "duplicate key \"name\"");
        assert_eq!(e.pos.map(|p| p.line), Some(3));
        // A YAML flow mapping too.
        let e = parse_yaml("apps: [{name: a, name: b}]\n").unwrap_err();
        assert_eq!((e.pos, e.message.as_str()), (Some(Pos { line: 1, col: 18 }), "duplicate key \"name\""));
    }

    #[test]
    fn json_syntax_error() {
        let e = parse_lenient_json("{\n  \"apps\": [\n    { \"script\" \"a.js\" }\n  ]\n}\n").unwrap_err();
        assert_eq!(e.pos.map(|p| p.line), Some(3), "{e:?}");
    }
}

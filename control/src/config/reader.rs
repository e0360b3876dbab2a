//! A path-tracking reader over a parsed TOML document that collects every error instead of
//! stopping at the first, so `omnirelay-control validate` can list them all at once, each
//! with its field path (`routes[3].cluster`).

use std::{cell::RefCell, collections::BTreeSet};

use toml::{Table, Value};

use super::ConfigError;

/// Collected errors, shared by every reader of one document.
#[derive(Debug, Default)]
pub(crate) struct Sink(RefCell<Vec<ConfigError>>);

impl Sink {
    pub(crate) fn push(&self, path: impl Into<String>, message: impl Into<String>) {
        self.0.borrow_mut().push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.0.into_inner()
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// One TOML table at a known path. Every key read is remembered; [`Obj::finish`] reports
/// the keys nobody read as unknown (typos never pass silently).
pub(crate) struct Obj<'a> {
    path: String,
    table: &'a Table,
    seen: RefCell<BTreeSet<String>>,
    sink: &'a Sink,
}

impl<'a> Obj<'a> {
    pub(crate) fn root(table: &'a Table, sink: &'a Sink) -> Self {
        Obj::new(String::new(), table, sink)
    }

    fn new(path: String, table: &'a Table, sink: &'a Sink) -> Self {
        Obj {
            path,
            table,
            seen: RefCell::new(BTreeSet::new()),
            sink,
        }
    }

    /// This table's own path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` inside this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records an error at `key`.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) {
        self.sink.push(self.path_of(key), message);
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.seen.borrow_mut().insert(key.to_owned());
        self.table.get(key)
    }

    fn typed<T>(&self, key: &str, want: &str, f: impl Fn(&'a Value) -> Option<T>) -> Option<T> {
        let v = self.get(key)?;
        let out = f(v);
        if out.is_none() {
            self.error(key, format!("expected {want}, found {}", type_name(v)));
        }
        out
    }

    /// An optional string.
    pub(crate) fn opt_str(&self, key: &str) -> Option<String> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// A required, non-empty string.
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        if self.table.get(key).is_none() {
            self.error(key, "missing (required)");
        }
        let s = self.opt_str(key)?;
        if s.is_empty() {
            self.error(key, "empty (required)");
            return None;
        }
        Some(s)
    }

    /// An optional integer within `min..=max`.
    pub(crate) fn opt_int(&self, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = self.typed(key, "an integer", Value::as_integer)?;
        if n < min || n > max {
            self.error(key, format!("{n} is out of range {min}..={max}"));
            return None;
        }
        Some(n)
    }

    /// An integer within `min..=max`, or `default` when absent (or invalid: the error is
    /// recorded and parsing goes on).
    pub(crate) fn int_or(&self, key: &str, default: i64, min: i64, max: i64) -> i64 {
        self.opt_int(key, min, max).unwrap_or(default)
    }

    /// A boolean or `default`.
    pub(crate) fn bool_or(&self, key: &str, default: bool) -> bool {
        self.typed(key, "a boolean", Value::as_bool)
            .unwrap_or(default)
    }

    /// An optional array of strings.
    pub(crate) fn str_list(&self, key: &str) -> Vec<String> {
        let Some(items) = self.typed(key, "an array of strings", Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    self.sink.push(
                        format!("{}[{i}]", self.path_of(key)),
                        format!("expected a string, found {}", type_name(v)),
                    );
                    None
                }
            })
            .collect()
    }

    /// An optional table of strings (`{ "name" = "value" }`), each entry with its path
    /// (`key."name"`), in key order.
    pub(crate) fn string_map(&self, key: &str) -> Vec<(String, String, String)> {
        let Some(t) = self.typed(key, "a table of strings", Value::as_table) else {
            return Vec::new();
        };
        let base = self.path_of(key);
        t.iter()
            .filter_map(|(k, v)| {
                let path = format!("{base}.{k:?}");
                match v.as_str() {
                    Some(s) => Some((path, k.clone(), s.to_owned())),
                    None => {
                        self.sink
                            .push(path, format!("expected a string, found {}", type_name(v)));
                        None
                    }
                }
            })
            .collect()
    }

    /// An optional sub-table.
    pub(crate) fn table(&self, key: &str) -> Option<Obj<'a>> {
        let t = self.typed(key, "a table", Value::as_table)?;
        Some(Obj::new(self.path_of(key), t, self.sink))
    }

    /// An optional array of values, each with its path (`key[i]`).
    pub(crate) fn array(&self, key: &str) -> Vec<(String, &'a Value)> {
        let Some(items) = self.typed(key, "an array", Value::as_array) else {
            return Vec::new();
        };
        let base = self.path_of(key);
        items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{base}[{i}]"), v))
            .collect()
    }

    /// An optional array of tables (`[[key]]`).
    pub(crate) fn tables(&self, key: &str) -> Vec<Obj<'a>> {
        self.array(key)
            .into_iter()
            .filter_map(|(path, v)| match v.as_table() {
                Some(t) => Some(Obj::new(path, t, self.sink)),
                None => {
                    self.sink
                        .push(path, format!("expected a table, found {}", type_name(v)));
                    None
                }
            })
            .collect()
    }

    /// Wraps a table value found elsewhere (e.g. an element of an inline array).
    pub(crate) fn child(&self, path: String, table: &'a Table) -> Obj<'a> {
        Obj::new(path, table, self.sink)
    }

    /// Whether the table has `key` (without marking it read).
    pub(crate) fn table_has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Records an error at `key` when it holds an empty array (`empty: {when_empty}`), or
    /// an array of more than `max` items (`len` of them, `{len} {items}; at most {max}`).
    pub(crate) fn check_list_len(
        &self,
        key: &str,
        len: usize,
        max: usize,
        items: &str,
        when_empty: &str,
    ) {
        let empty = self
            .table
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        if empty {
            self.error(key, format!("empty: {when_empty}"));
        }
        if len > max {
            self.error(key, format!("{len} {items}; at most {max}"));
        }
    }

    /// Marks `key` read without reading it (a field whose errors would only repeat
    /// another's).
    pub(crate) fn skip(&self, key: &str) {
        self.seen.borrow_mut().insert(key.to_owned());
    }

    /// Records `message` at `key` when the table has it (a field that does not apply
    /// here); read, so it is not reported as unknown too.
    pub(crate) fn refuse(&self, key: &str, message: &str) {
        if self.get(key).is_some() {
            self.error(key, message);
        }
    }

    /// Records an error at an explicit path.
    pub(crate) fn error_at(&self, path: impl Into<String>, message: impl Into<String>) {
        self.sink.push(path, message);
    }

    /// Reports every key of this table that no reader asked for.
    pub(crate) fn finish(self) {
        let seen = self.seen.into_inner();
        for key in self.table.keys() {
            if !seen.contains(key) {
                self.sink.push(
                    if self.path.is_empty() {
                        key.clone()
                    } else {
                        format!("{}.{key}", self.path)
                    },
                    "unknown field",
                );
            }
        }
    }
}

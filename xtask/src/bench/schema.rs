//! Checks result files against `bench/schema/result.schema.json`. A small JSON Schema
//! validator for the keywords that schema uses: `type` (one or a list), `properties`,
//! `required`, `additionalProperties` (bool or schema), `items`, `minItems`, `enum`,
//! `const`, `minimum`, `maximum` and local `$ref`s (`#/$defs/NAME`). An unknown keyword is
//! an error, so the schema cannot silently use something this checker ignores.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The schema file of the result format.
pub fn schema_path() -> PathBuf {
    crate::run::workspace_root().join("bench/schema/result.schema.json")
}

/// Loads the schema.
pub fn load() -> anyhow::Result<Value> {
    let path = schema_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Checks `doc` (from `path`, for messages) against `schema`; lists every violation.
pub fn check(schema: &Value, doc: &Value, path: &Path) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    validate(schema, schema, doc, "$", &mut errors);
    if !errors.is_empty() {
        bail!(
            "{} does not match {}:\n  {}",
            path.display(),
            schema_path().display(),
            errors.join("\n  ")
        );
    }
    Ok(())
}

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "enum",
    "const",
    "minimum",
    "maximum",
];

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Validates `v` at `at` against `s`; `root` resolves `$ref`s.
fn validate(root: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = s.as_object() else {
        if s.as_bool() == Some(false) {
            errors.push(format!("{at}: not allowed here"));
        }
        return;
    };
    for k in s.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        errors.push(format!(
            "schema keyword {k:?} (at {at}) is not supported by the checker"
        ));
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match r
            .strip_prefix("#/$defs/")
            .and_then(|n| root["$defs"].get(n))
        {
            Some(target) => validate(root, target, v, at, errors),
            None => errors.push(format!("{at}: unresolvable $ref {r}")),
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.iter().any(|t| type_matches(t, v)) {
            errors.push(format!(
                "{at}: expected {}, found {}",
                types.join(" or "),
                kind(v)
            ));
            return;
        }
    }
    if let Some(list) = s.get("enum").and_then(Value::as_array)
        && !list.contains(v)
    {
        errors.push(format!(
            "{at}: {v} is not one of {}",
            Value::Array(list.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{at}: expected {c}, found {v}"));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errors.push(format!("{at}: {n} is above the maximum {max}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = req.as_str()
                && !obj.contains_key(name)
            {
                errors.push(format!("{at}: missing required field {name:?}"));
            }
        }
        for (k, field) in obj {
            let here = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(sub), _) => validate(root, sub, field, &here, errors),
                (None, Some(extra)) => validate(root, extra, field, &here, errors),
                (None, None) => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!(
                "{at}: {} items, at least {min} expected",
                items.len()
            ));
        }
        if let Some(sub) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(root, sub, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, doc: Value) -> Vec<String> {
        let mut e = Vec::new();
        validate(&schema, &schema, &doc, "$", &mut e);
        e
    }

    #[test]
    fn types_required_refs_and_extra_fields() {
        let schema = json!({
            "$defs": { "n": { "type": "integer", "minimum": 0 } },
            "type": "object",
            "required": ["a"],
            "additionalProperties": false,
            "properties": {
                "a": { "$ref": "#/$defs/n" },
                "b": { "type": ["string", "null"], "enum": ["x", null] },
                "c": { "type": "array", "minItems": 1, "items": { "type": "number" } }
            }
        });
        assert!(errors(schema.clone(), json!({"a": 1, "b": null, "c": [1.5]})).is_empty());
        let e = errors(schema, json!({"a": -1, "b": "y", "c": [], "d": 1}));
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|m| m.contains("$.d: not allowed")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("$.a: -1 is below")), "{e:?}");
    }

    #[test]
    fn unknown_keywords_are_reported() {
        let e = errors(json!({"pattern": "x"}), json!("x"));
        assert!(e[0].contains("\"pattern\""), "{e:?}");
    }

    #[test]
    fn the_shipped_schema_uses_only_supported_keywords() {
        let schema = load().unwrap();
        let mut e = Vec::new();
        walk(&schema, &mut e);
        assert!(e.is_empty(), "{e:?}");
    }

    /// Collects the keywords of `s` and its subschemas that the checker does not know.
    fn walk(s: &Value, e: &mut Vec<String>) {
        let Some(obj) = s.as_object() else { return };
        for (k, v) in obj {
            if !KNOWN.contains(&k.as_str()) {
                e.push(k.clone());
            }
            match k.as_str() {
                "properties" | "$defs" => v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .for_each(|(_, s)| walk(s, e)),
                "items" | "additionalProperties" => walk(v, e),
                _ => {}
            }
        }
    }
}

//! `omnirelay.toml`: parsing and validation.
//!
//! Every problem is reported, not just the first, each with the path of the field and the
//! reason (`routes[3].cluster: unknown cluster "api"`). Unknown fields are errors, so a typo
//! never silently falls back to a default.

mod model;
mod parse;
mod reader;
mod refs;

use std::fmt;

pub use model::*;

/// One problem in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `routes[3].cluster` (empty for document-level errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Where the document came from.
    pub origin: String,
    /// The problems (never empty).
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} error{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates a config document.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    read(text, origin, |table, sink| {
        let config = parse::document(table, sink);
        refs::check(&config, sink);
        config
    })
}

/// Reads only the `[control]` section of a document (the daemon's own addresses and TLS),
/// for a start whose config does not load as a whole.
pub fn parse_control(text: &str, origin: &str) -> Result<ControlSection, ConfigErrors> {
    read(text, origin, parse::control_only)
}

/// Parses `text` as TOML and reads it with `f`; every problem `f` records is an error.
fn read<T>(
    text: &str,
    origin: &str,
    f: impl FnOnce(&toml::Table, &reader::Sink) -> T,
) -> Result<T, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        origin: origin.to_owned(),
        errors,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| line_col(text, s.start))
            .map(|(l, c)| format!("line {l}, column {c}"))
            .unwrap_or_default();
        fail(vec![ConfigError {
            path: at,
            message: format!("invalid TOML: {}", e.message()),
        }])
    })?;
    let sink = reader::Sink::default();
    let value = f(&table, &sink);
    let errors = sink.into_errors();
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(fail(errors))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
    (line, col)
}

#[cfg(test)]
mod tests;

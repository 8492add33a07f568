//! How each layer of the configuration (the file, the `GRADATA_*` environment, the flags) becomes
//! a TOML table checked against the shape `options` declares, with the old names of renamed keys
//! read as the new ones.
//!
//! It knows nothing of what a valid value is: `validate` decides that, after the merge.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::options::{ALIASES, OptionDecl, RawConfig, ValueType};
use super::{Error, Source};

/// A list of strings, or a single string taken as a list of one.
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address or a list of addresses")
        }

        fn visit_str<E: serde::de::Error>(self, address: &str) -> Result<Vec<String>, E> {
            Ok(vec![address.to_owned()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut addresses = Vec::new();
            while let Some(address) = seq.next_element::<String>()? {
                addresses.push(address);
            }
            Ok(addresses)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<toml::Table, Error> {
    let mut table: toml::Table = text.parse().map_err(|err: toml::de::Error| Error::File {
        path: path.to_path_buf(),
        message: one_line(&err, Some(text)),
    })?;
    rename_old_keys(&mut table).map_err(|message| Error::File {
        path: path.to_path_buf(),
        message,
    })?;
    // Checked alone, so that an unknown key or a wrong type is reported against the file.
    RawConfig::deserialize(table.clone()).map_err(|err| Error::File {
        path: path.to_path_buf(),
        message: one_line(&err, Some(text)),
    })?;
    Ok(table)
}

/// Moves the value of each old key ([`ALIASES`]) to its new key; both given is an error, since
/// which one was meant is unclear.
fn rename_old_keys(table: &mut toml::Table) -> Result<(), String> {
    for alias in &ALIASES {
        let Some((group, name)) = alias.old_key.split_once('.') else {
            continue;
        };
        let Some(toml::Value::Table(old_group)) = table.get_mut(group) else {
            continue;
        };
        let Some(value) = old_group.remove(name) else {
            continue;
        };
        if get(table, alias.key).is_some() {
            return Err(format!(
                "{}: given beside {}, its new name; keep only {}",
                alias.old_key, alias.key, alias.key
            ));
        }
        insert(table, alias.key, value);
    }
    Ok(())
}

/// The value at a dotted key, if the table has one.
fn get<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let (group, name) = dotted.split_once('.')?;
    table.get(group)?.as_table()?.get(name)
}

/// A TOML error as one line, key first: `sync.batch_size: invalid type: …`, or
/// `line 3, column 7: …` for a syntax error. The parser's own text spans several lines (a caret
/// snippet, the key on a line of its own), and systemd keeps only the first line of a `STATUS=`,
/// the journal makes each line of stderr a record of its own.
pub(super) fn one_line(err: &toml::de::Error, text: Option<&str>) -> String {
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // The path of keys is public only through `Display`, as a last line "in `a.b`".
    let rendered = err.to_string();
    let mut key = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_owned);
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        key = Some(match key {
            Some(parent) => format!("{parent}.{field}"),
            None => field.to_owned(),
        });
    }
    let position = err.span().zip(text).and_then(|(span, text)| {
        let before = text.get(..span.start)?;
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Some(format!("line {line}, column {column}"))
    });
    match (key, position) {
        (Some(key), Some(position)) => format!("{key}: {message} ({position})"),
        (Some(key), None) => format!("{key}: {message}"),
        (None, Some(position)) => format!("{position}: {message}"),
        (None, None) => message,
    }
}

pub(super) fn record_sources(
    table: &toml::Table,
    prefix: &str,
    source: &Source,
    sources: &mut BTreeMap<String, Source>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => record_sources(inner, &path, source, sources),
            _ => {
                sources.insert(path, source.clone());
            }
        }
    }
}

/// The value of `option` given in the variable `name` (its own, or its old name's).
pub(super) fn parse_env(
    option: &OptionDecl,
    name: &'static str,
    value: &str,
) -> Result<toml::Value, Error> {
    let invalid = |expected: &str| Error::Invalid {
        key: option.key.to_owned(),
        origin: Source::Env(name),
        message: format!("expected {expected}, got {value:?}"),
    };
    Ok(match option.value_type {
        ValueType::Str => toml::Value::String(value.to_owned()),
        ValueType::Int => toml::Value::Integer(
            value
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| invalid("a whole number"))?,
        ),
        ValueType::Float => {
            let number = value
                .trim()
                .parse::<f64>()
                .map_err(|_| invalid("a number"))?;
            if !number.is_finite() {
                return Err(invalid("a finite number"));
            }
            toml::Value::Float(number)
        }
        ValueType::Bool => toml::Value::Boolean(
            parse_bool(value).ok_or_else(|| invalid("1/0, true/false, yes/no or on/off"))?,
        ),
        ValueType::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub(super) fn insert(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return;
        };
        current = inner;
    }
    current.insert(last.to_owned(), value);
}

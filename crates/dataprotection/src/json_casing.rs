//! Case-insensitive JSON property names: the one approach of the client (Azure's responses)
//! and the emulator (clients' requests).
//!
//! Azure binds JSON with Json.NET, which matches property names case-insensitively (the
//! article itself sends `datasourceinfo`), and its answers vary in casing too. Both sides read
//! a body by first rewriting every known property name to the spec's casing, then
//! deserializing models that carry only the spec's names. Chosen over serde `alias` lists
//! because an alias list covers only the spellings someone wrote down (`DATASOURCEINFO` slips
//! through), must be repeated on every field, and cannot reach the `objectType` tag of an
//! internally tagged enum; each side's tests check that its list holds every name its models
//! write, so a new field cannot be forgotten.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The property names of a model, in the spec's casing, and the properties whose values are
/// user data (map keys there are left as they are, e.g. `tags`).
#[derive(Debug, Clone)]
pub struct PropertyNames {
    canonical: HashMap<String, &'static str>,
    opaque: &'static [&'static str],
}

impl PropertyNames {
    /// `known`: every property name of the model; `opaque`: properties whose object values
    /// are user data, not model.
    pub fn new(known: &[&'static str], opaque: &'static [&'static str]) -> Self {
        Self {
            canonical: known.iter().map(|k| (k.to_ascii_lowercase(), *k)).collect(),
            opaque,
        }
    }

    /// Whether `name` (in this exact casing) is a known property name.
    pub fn contains(&self, name: &str) -> bool {
        self.canonical.get(&name.to_ascii_lowercase()) == Some(&name)
    }

    /// Rewrites object keys to the spec's casing; unknown keys stay as sent.
    pub fn canonicalize(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, v)| {
                        let key = self
                            .canonical
                            .get(&key.to_ascii_lowercase())
                            .map_or(key, |k| (*k).to_owned());
                        let v = if self.opaque.contains(&key.as_str()) {
                            v
                        } else {
                            self.canonicalize(v)
                        };
                        (key, v)
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.canonicalize(v)).collect())
            }
            other => other,
        }
    }

    /// Deserializes `value` with property names in any casing.
    pub fn from_value<T: DeserializeOwned>(&self, value: Value) -> serde_json::Result<T> {
        serde_json::from_value(self.canonicalize(value))
    }

    /// Parses JSON text with property names in any casing.
    pub fn from_slice<T: DeserializeOwned>(&self, text: &[u8]) -> serde_json::Result<T> {
        self.from_value(serde_json::from_slice(text)?)
    }

    /// Every key of `value` (at any depth, outside opaque properties) that is not a known
    /// name in the spec's casing: what a test of a model's name list looks for.
    pub fn unknown_keys(&self, value: &Value) -> Vec<String> {
        let mut unknown = Vec::new();
        self.collect_unknown(value, &mut unknown);
        unknown
    }

    fn collect_unknown(&self, value: &Value, unknown: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if !self.contains(key) {
                        unknown.push(key.clone());
                    }
                    if !self.opaque.contains(&key.as_str()) {
                        self.collect_unknown(v, unknown);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.collect_unknown(v, unknown)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_names_take_the_spec_casing_and_opaque_values_stay() {
        let names = PropertyNames::new(&["dataSourceInfo", "resourceID", "tags"], &["tags"]);
        let value = names.canonicalize(json!({
            "DATASOURCEINFO": {"resourceid": "/x", "Other": 1},
            "tags": {"RESOURCEID": "user data"},
            "list": [{"ResourceId": "/y"}]
        }));
        assert_eq!(
            value,
            json!({
                "dataSourceInfo": {"resourceID": "/x", "Other": 1},
                "tags": {"RESOURCEID": "user data"},
                "list": [{"resourceID": "/y"}]
            })
        );
        assert_eq!(names.unknown_keys(&value), ["Other", "list"]);
    }
}

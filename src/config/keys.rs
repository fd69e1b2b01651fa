//! Unknown keys: where the parser found one ([`UnknownKey`]), and which keys the table it sits
//! in accepts, read from the raw types' serde derives so that suggestions cannot drift from
//! the parser.

use super::raw::{
    RawBuildTable, RawCommandTable, RawConsistency, RawMachine, RawMatrix, RawOverride, RawReady,
    RawRule, RawRuntime, RawSanitizer, RawService, RawStages,
};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// A key the parser did not recognise, as the path of keys (and list indexes) leading to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnknownKey(Vec<String>);

impl UnknownKey {
    /// The path serde_ignored reports, without its `?` steps for optional values: those are
    /// not keys a user writes (`stages.names`, not `stages.?.names`).
    pub(super) fn from_path(path: &serde_ignored::Path) -> Self {
        fn walk(path: &serde_ignored::Path, keys: &mut Vec<String>) {
            use serde_ignored::Path;
            match path {
                Path::Root => {}
                Path::Seq { parent, index } => {
                    walk(parent, keys);
                    keys.push(index.to_string());
                }
                Path::Map { parent, key } => {
                    walk(parent, keys);
                    keys.push(key.clone());
                }
                Path::Some { parent }
                | Path::NewtypeStruct { parent }
                | Path::NewtypeVariant { parent } => walk(parent, keys),
            }
        }
        let mut keys = Vec::new();
        walk(path, &mut keys);
        UnknownKey(keys)
    }

    /// The key itself, without the path to it.
    pub(super) fn name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or_default()
    }

    /// The keys the table holding this key accepts; empty where no table is known.
    pub(super) fn siblings(&self) -> &'static [&'static str] {
        let table: Vec<&str> = self.0[..self.0.len().saturating_sub(1)]
            .iter()
            .map(String::as_str)
            .collect();
        match table.as_slice() {
            [] => fields_of::<RawMatrix>(),
            ["stages"] => fields_of::<RawStages>(),
            ["machines", _] => fields_of::<RawMachine>(),
            ["runtimes", _] => fields_of::<RawRuntime>(),
            ["runtimes", _, "build"] => fields_of::<RawBuildTable>(),
            ["runtimes", _, "commands", _] => fields_of::<RawCommandTable>(),
            ["overrides", _] => fields_of::<RawOverride>(),
            ["services", _] => fields_of::<RawService>(),
            ["services", _, "build"] => fields_of::<RawBuildTable>(),
            ["services", _, "ready"] => fields_of::<RawReady>(),
            ["exclude" | "expected-failures", _] => fields_of::<RawRule>(),
            ["consistency"] => fields_of::<RawConsistency>(),
            ["consistency", "sanitizers", _] => fields_of::<RawSanitizer>(),
            _ => &[],
        }
    }
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// The keys a struct's `#[derive(Deserialize)]` accepts: the derive hands them to
/// `deserialize_struct`, which this deserializer records before giving up.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs have field names"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_come_from_the_raw_types() {
        assert_eq!(
            fields_of::<RawMatrix>(),
            [
                "notebooks-dir",
                "stages",
                "machines",
                "runtimes",
                "overrides",
                "exclude",
                "expected-failures",
                "consistency",
                "services"
            ]
        );
        assert!(fields_of::<RawRuntime>().contains(&"cell-timeout"));
        assert_eq!(
            fields_of::<RawBuildTable>(),
            ["context", "dockerfile", "script"]
        );
    }

    #[test]
    fn unknown_keys_find_their_table() {
        let key = |keys: &[&str]| UnknownKey(keys.iter().map(|k| k.to_string()).collect());
        let typo = key(&["runtimes", "py", "commands", "x", "timout"]);
        assert_eq!(typo.to_string(), "runtimes.py.commands.x.timout");
        assert_eq!(typo.name(), "timout");
        assert_eq!(typo.siblings(), ["run", "timeout", "tags", "stages"]);
        assert_eq!(
            key(&["overrides", "0", "x"]).siblings(),
            fields_of::<RawOverride>()
        );
        assert_eq!(key(&["notebook-dir"]).siblings(), fields_of::<RawMatrix>());
        assert!(
            key(&["runtimes", "py", "env", "x", "y"])
                .siblings()
                .is_empty()
        );
    }
}

//! JSON Schemas of the files runtime-matrix reads and writes, generated from their types with
//! schemars. The main type is [`Document`]; `runtime-matrix schema NAME` prints each, and
//! `schemas/` in the repository holds them as shipped (a test keeps the two equal).
//!
//! All are draft-07, the newest draft that editors' TOML plugins (Taplo, Even Better TOML)
//! and most validators agree on.

use schemars::generate::{Contract, SchemaSettings};
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

/// A document runtime-matrix reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Document {
    /// `matrix.toml`, as the loader reads it (unknown keys, which it warns about, are errors
    /// here, so that an editor flags them).
    Matrix,
    /// One trial's record (`records/*.json` in a run folder), as `report` reads it.
    Record,
    /// `report.json`.
    Report,
    /// `runtime-matrix plan --format json`.
    Plan,
}

impl Document {
    /// Every document, in the order `schemas/` lists them.
    pub const ALL: [Document; 4] = [
        Document::Matrix,
        Document::Record,
        Document::Report,
        Document::Plan,
    ];

    /// The schema's file name under `schemas/`: `matrix.schema.json`.
    pub fn file_name(self) -> String {
        let name = match self {
            Document::Matrix => "matrix",
            Document::Record => "record",
            Document::Report => "report",
            Document::Plan => "plan",
        };
        format!("{name}.schema.json")
    }

    /// The document's JSON Schema.
    pub fn schema(self) -> Schema {
        match self {
            // The loader's view: what it accepts, not what anything writes.
            Document::Matrix => {
                let mut settings = settings();
                settings.contract = Contract::Deserialize;
                settings.transforms.push(Box::new(without_null));
                crate::config::schema(settings)
            }
            // What `report` reads as a record, which is what is written and what older
            // runtime-matrix versions wrote (without `image`, say).
            Document::Record => generate::<crate::record::TrialRecord>(|settings| {
                settings.contract = Contract::Deserialize;
            }),
            // What is written: every field that is always written is required.
            Document::Report => generate::<crate::report::Report>(serialized),
            Document::Plan => generate::<crate::plan::PlanDocument>(serialized),
        }
    }

    /// The schema as the file under `schemas/` holds it: pretty JSON and a final newline.
    pub fn schema_text(self) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.schema()).expect("schemas always serialise");
        text.push('\n');
        text
    }
}

fn serialized(settings: &mut SchemaSettings) {
    settings.contract = Contract::Serialize;
}

fn generate<T: JsonSchema>(configure: impl FnOnce(&mut SchemaSettings)) -> Schema {
    let mut settings = settings();
    configure(&mut settings);
    settings.into_generator().into_root_schema_for::<T>()
}

/// Draft-07, with descriptions as editors show them.
fn settings() -> SchemaSettings {
    let mut settings = SchemaSettings::draft07();
    settings.transforms.push(Box::new(plain_descriptions));
    settings
}

/// Descriptions come from doc comments: rustdoc's link brackets (`` [`Plan`] ``) and link
/// definitions mean nothing in an editor's hover text, so they go.
fn plain_descriptions(schema: &mut Schema) {
    transform_subschemas(&mut plain_descriptions, schema);
    let Some(Value::String(description)) = schema.get_mut("description") else {
        return;
    };
    let lines: Vec<&str> = description
        .lines()
        .filter(|line| !(line.starts_with('[') && line.contains("]: ")))
        .collect();
    *description = lines
        .join("\n")
        .trim_end()
        .replace("[`", "`")
        .replace("`]", "`");
}

/// Drops `null` from every schema: TOML has no null (an optional key is absent), so "or null"
/// would only be noise in an editor's completion.
fn without_null(schema: &mut Schema) {
    transform_subschemas(&mut without_null, schema);
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|kind| kind != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(alternatives)) = object.get_mut("anyOf") {
        alternatives.retain(|alternative| *alternative != serde_json::json!({ "type": "null" }));
        if alternatives.len() == 1 {
            // `allOf` of one, not the `$ref` itself: in draft-07 a `$ref` hides its siblings
            // (the description an editor shows).
            let only = object.remove("anyOf").expect("just matched");
            object.insert("allOf".into(), only);
        }
    }
}

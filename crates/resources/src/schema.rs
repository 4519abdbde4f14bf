//! Post-processing of the generated structural schemas.

use serde_json::Value;

/// Rewrites the integer formats schemars gives unsigned types (`uint8` … `uint64`, `uint`),
/// which the API server does not recognise and warns about on every apply, into the two
/// OpenAPI integer formats it knows: `int32` for 8- and 16-bit values, `int64` for 32- and
/// 64-bit ones (a `u32` does not fit an `int32`). The `minimum: 0` schemars emits with them
/// keeps saying that the value is unsigned. Applied (as a schemars transform) to the spec and
/// status of every kind, it covers their whole inlined schema.
pub fn unsigned_formats(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        for value in object.values_mut() {
            rewrite(value);
        }
        if let Some(Value::String(format)) = object.get_mut("format") {
            replace(format);
        }
    }
}

fn rewrite(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(format)) = object.get_mut("format") {
                replace(format);
            }
            for value in object.values_mut() {
                rewrite(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        _ => {}
    }
}

fn replace(format: &mut String) {
    let known = match format.as_str() {
        "uint8" | "uint16" => "int32",
        "uint32" | "uint64" | "uint" => "int64",
        _ => return,
    };
    *format = known.to_owned();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_formats_become_known_ones_and_keep_their_bounds() {
        let mut schema = schemars::Schema::try_from(serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0},
                "b": {"type": "array", "items": {"type": "integer", "format": "uint64", "minimum": 1}},
                "c": {"type": "integer", "format": "uint16", "minimum": 0},
                "d": {"type": "integer", "format": "int32"},
                "e": {"type": "string", "format": "date-time"},
                "format": {"type": "string"}
            }
        }))
        .expect("an object schema");
        unsigned_formats(&mut schema);
        assert_eq!(
            schema.as_value(),
            &serde_json::json!({
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "format": "int64", "minimum": 0},
                    "b": {"type": "array", "items": {"type": "integer", "format": "int64", "minimum": 1}},
                    "c": {"type": "integer", "format": "int32", "minimum": 0},
                    "d": {"type": "integer", "format": "int32"},
                    "e": {"type": "string", "format": "date-time"},
                    "format": {"type": "string"}
                }
            })
        );
    }
}

//! Schema fragments the derive cannot express: maps of arbitrary JSON values, which a
//! structural CRD schema must mark with `x-kubernetes-preserve-unknown-fields`.

use schemars::{Schema, SchemaGenerator, json_schema};

/// `map[string]JSON`: an object whose values may be anything.
pub fn json_value_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// `[]metav1.Condition` with the validation the Kubernetes API conventions give it, so a
/// status written by any client is checked as strictly as a built-in kind's.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "The latest observations of the resource's state.",
        "items": {
            "type": "object",
            "description": "One aspect of the resource's state.",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the condition last changed from one status to another."
                },
                "message": {
                    "type": "string",
                    "maxLength": 32768,
                    "description": "A human-readable explanation of the condition."
                },
                "observedGeneration": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                    "description": "The metadata.generation the condition was computed from."
                },
                "reason": {
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                    "description": "A CamelCase reason for the last transition; for Synchronized, the synchronisation state."
                },
                "status": {
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                    "description": "True, False or Unknown."
                },
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                    "description": "The condition type, e.g. Synchronized or Ready."
                }
            }
        }
    })
}

/// The schema of `T` for an `Option<T>` field: absent is expressed by omission, so no `null`
/// joins an enum's values.
pub fn optional<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

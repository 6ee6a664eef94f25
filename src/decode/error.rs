//! Why a record is bad. The `Display` text is the dead-letter reason, so it
//! names the problem (and the attribute or field) in plain words.

/// A record that cannot be classified as anything but bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("too large: {size} bytes > {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not UTF-8 at byte {at}")]
    NotUtf8 { at: usize },
    #[error("nested too deeply (>{limit})")]
    TooDeep { limit: usize },
    /// serde_json's message, with its line and column.
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an object: found {found}")]
    NotObject { found: &'static str },
    #[error("missing attribute `{0}`")]
    MissingAttribute(&'static str),
    #[error("wrong type for attribute `{name}`: expected {expected}, found {found}")]
    WrongAttributeType {
        name: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("empty attribute `{0}`")]
    EmptyAttribute(&'static str),
    #[error("unsupported specversion {0:?}: expected \"1.0\"")]
    UnsupportedSpecVersion(String),
    #[error("invalid timestamp in attribute `time`: {0:?}")]
    BadTime(String),
    #[error("attribute `data` is a string but not JSON: {0}")]
    DataStringNotJson(String),
    /// `field` is a dotted path such as `data.job_sid`.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("wrong type for field `{field}`: expected {expected}, found {found}")]
    WrongFieldType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("empty field `{0}`")]
    EmptyField(&'static str),
    #[error("invalid timestamp in field `{field}`: {value:?}")]
    BadTimestamp { field: &'static str, value: String },
    #[error("invalid field `data.job_sid`: {0}")]
    BadJobSid(String),
    /// A JSON object the typed parser rejects for a reason the checks above
    /// do not name (for instance a duplicate key); serde_json's message.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A short, stable label for metrics (`bad_records_total{reason=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotObject { .. } => "not_object",
            DecodeError::MissingAttribute(_) => "missing_attribute",
            DecodeError::WrongAttributeType { .. } => "wrong_attribute_type",
            DecodeError::EmptyAttribute(_) => "empty_attribute",
            DecodeError::UnsupportedSpecVersion(_) => "unsupported_specversion",
            DecodeError::BadTime(_) => "bad_time",
            DecodeError::DataStringNotJson(_) => "data_string_not_json",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::WrongFieldType { .. } => "wrong_field_type",
            DecodeError::EmptyField(_) => "empty_field",
            DecodeError::BadTimestamp { .. } => "bad_timestamp",
            DecodeError::BadJobSid(_) => "bad_job_sid",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// The JSON type name of a value, for "found ..." in messages.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

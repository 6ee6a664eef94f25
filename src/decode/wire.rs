//! The serde shapes of a record, close to the JSON.
//!
//! These are what the fast path deserializes straight from the bytes, and
//! what the slow path rebuilds from a validated `serde_json::Value`; both
//! then go through the same [`super::envelope::classify`], so the two
//! paths cannot disagree on a record that both can read. Every attribute
//! is optional here: presence and emptiness are judged by `classify`, which
//! can name the missing attribute; serde's "missing field" could not.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};

/// A string borrowed from the input when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The CloudEvent envelope. Unknown attributes are ignored. So is
/// `datacontenttype` as a media type: the shape of `data` decides how it is
/// read, not its declared content type. It is kept only when it is a
/// string, because the seed's doc fills it with a timestamp (the event's
/// time, by every sign), which `envelope::resolve_time` may use.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireEnvelope<'a> {
    #[serde(borrow)]
    pub id: Option<Text<'a>>,
    #[serde(borrow)]
    pub source: Option<Text<'a>>,
    #[serde(borrow)]
    pub specversion: Option<Text<'a>>,
    #[serde(borrow, rename = "type")]
    pub ty: Option<Text<'a>>,
    #[serde(borrow)]
    pub time: Option<Text<'a>>,
    /// A string, or `None` for any other shape (never an error).
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub datacontenttype: Option<Text<'a>>,
    pub dataschema: Option<String>,
    #[serde(borrow)]
    pub data: Option<WireData<'a>>,
}

/// A string as [`Text`]; any other JSON value (number, object, ...) is
/// consumed and read as `None`. For attributes whose shape must never make
/// a record bad.
fn lenient_text<'de: 'a, 'a, D: de::Deserializer<'de>>(d: D) -> Result<Option<Text<'a>>, D::Error> {
    struct V<'a>(PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
        type Value = Option<Text<'a>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Text(Cow::Borrowed(v))))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Text(Cow::Owned(v.to_owned()))))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Text(Cow::Owned(v))))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: de::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// `data` as found: an object, a JSON-encoded string, or something else
/// (kept only as its type name, for the error).
// Lives for one decode on the stack; boxing the large variant would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum WireData<'a> {
    Object(WireBulkData<'a>),
    Text(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for WireData<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireData<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object or a string")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WireData<'a>, A::Error> {
                WireBulkData::deserialize(MapAccessDeserializer::new(map)).map(WireData::Object)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<WireData<'a>, E> {
                Ok(WireData::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireData<'a>, E> {
                Ok(WireData::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<WireData<'a>, E> {
                Ok(WireData::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireData<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(WireData::Other("array"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<WireData<'a>, E> {
                Ok(WireData::Other("boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<WireData<'a>, E> {
                Ok(WireData::Other("integer"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<WireData<'a>, E> {
                Ok(WireData::Other("integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<WireData<'a>, E> {
                Ok(WireData::Other("number"))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The union of the bulk-job `data` fields and the sink test's `test_id`,
/// so that one typed pass reads either.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireBulkData<'a> {
    pub job_sid: Option<String>,
    #[serde(borrow)]
    pub status: Option<Text<'a>>,
    pub friendly_name: Option<String>,
    pub description: Option<String>,
    #[serde(borrow)]
    pub created_at: Option<Text<'a>>,
    #[serde(borrow)]
    pub completed_at: Option<Text<'a>>,
    #[serde(default, deserialize_with = "object_or_null")]
    pub thresholds: Option<WireThresholds>,
    #[serde(default, deserialize_with = "object_or_null")]
    pub result: Option<WireResult>,
    pub twilio_error_code: Option<i64>,
    pub test_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WireThresholds {
    pub error: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WireResult {
    pub total_count: Option<i64>,
    pub processed_count: Option<i64>,
    pub success_count: Option<i64>,
    pub error_count: Option<i64>,
    pub file_url: Option<String>,
    pub details: Option<String>,
}

/// Reads a nested struct from an object only. serde's derived structs also
/// accept a JSON array, field by field in order; the schema says object,
/// and the slow path's checks say so too, so the fast path must agree.
fn object_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D2: de::Deserializer<'de>>(self, d: D2) -> Result<Option<T>, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(V(PhantomData))
}

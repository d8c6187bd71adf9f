//! JSON values in the state store; decode errors name the key.

use crate::store::StoreError;
use serde::{de::DeserializeOwned, Serialize};

/// Encodes a value as JSON bytes.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Decode {
        key: key.to_string(),
        message: format!("cannot encode: {e}"),
    })
}

/// Decodes JSON bytes; the error names the key and the JSON path that failed.
///
/// ```
/// use ccm_core::runtime::codec::decode;
/// let e = decode::<ccm_core::session::LabletSession>("/ccm/sessions/x", b"{}").unwrap_err();
/// assert!(e.to_string().contains("/ccm/sessions/x"), "{e}");
/// ```
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| StoreError::Decode {
        key: key.to_string(),
        message: format!("at `{}`: {}", e.path(), e.inner()),
    })
}

//! Serves files as they are: next start's headers, ETag/304, Range/206, precompressed variants.

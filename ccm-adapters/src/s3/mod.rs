//! s3 adapter.

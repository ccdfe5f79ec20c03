//! TLS against the secure front end.

//! from_properties.

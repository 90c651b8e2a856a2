//! octet-ir

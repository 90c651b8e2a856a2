//! octet

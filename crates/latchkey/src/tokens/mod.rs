//! Tokens: access JWTs ([`access`]), their signing keys and JWKS ([`keys`]), and opaque
//! refresh tokens ([`refresh`]).

pub mod access;
pub mod cache;
pub mod keys;
pub mod refresh;

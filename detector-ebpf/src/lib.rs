#![no_std]
// This library target exists so that detector/build.rs can depend on this
// crate and be rebuilt when the programs change.

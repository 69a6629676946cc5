//! Cross-module tests: see the submodules.

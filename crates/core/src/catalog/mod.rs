//! The catalog: features and plans as code (TOML), loaded and validated.

//! One module per resource; each exposes `routes()` and is merged here.

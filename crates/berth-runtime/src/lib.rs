//! berth's runtime (placeholder).

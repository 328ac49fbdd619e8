//! berth's image store (placeholder until the store lands).

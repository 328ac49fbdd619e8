//! The build script of the crates whose tests run on PostgreSQL (berth-store,
//! berth-server): `cfg(postgres_tests)` when PostgreSQL is set up for the tests (or CI
//! demands it, where a missing URL then fails): without it the PostgreSQL
//! variants show as ignored, never as passed having done nothing.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=BERTH_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=CI");
    let url_set = std::env::var("BERTH_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty());
    if url_set || std::env::var("CI").as_deref() == Ok("true") {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}

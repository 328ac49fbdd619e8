//! Ids.

use berth_core::time::now_millis;

/// A new 24-hex-character id: 8 characters of creation time in seconds,
/// then 16 random ones.
pub fn new_id() -> String {
    let seconds = (now_millis() / 1000) as u32;
    let mut random = [0u8; 8];
    // getrandom(2) does not fail for 8 bytes once the pool is initialised;
    // a zeroed tail would still be unique enough with the time prefix, but
    // retry rather than accept it.
    while rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()).is_err() {}
    format!("{seconds:08x}{}", hex::encode(random))
}

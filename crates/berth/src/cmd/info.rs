//! `berth info`: what this host gives berth to work with.

use crate::cli::{Global, InfoArgs};
use crate::cmd::open_runtime;

pub fn run(global: &Global, args: InfoArgs) -> anyhow::Result<u8> {
    let runtime = open_runtime(global)?;
    let cgroups = runtime.cgroups();
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let join = cgroups.join();
    let network = berth_net::probe::features();
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel,
        "cgroups": cgroups.describe(),
        "device_cgroup": cgroups.restricts_devices(),
        "fast_cgroup_moves": join.is_fast(),
        "data_dir": global.data_dir,
        "cgroup_parent": global.cgroup_parent,
        "bridge": global.bridge,
        "network": network,
    });
    if args.json {
        println!("{info}");
    } else {
        println!("berth {}", env!("CARGO_PKG_VERSION"));
        println!("kernel:        {kernel}");
        println!("cgroups:       {}", cgroups.describe());
        println!(
            "device cgroup: {}",
            if cgroups.restricts_devices() {
                "yes"
            } else {
                "no (CAP_MKNOD is dropped instead)"
            }
        );
        println!("cgroup moves:  {}", join.describe());
        println!("data dir:      {}", global.data_dir.display());
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!(
            "networks:      bridge {}, veth {}, nf_tables {}, macvlan {}, vxlan {}, ifb {}",
            yes_no(network.bridge),
            yes_no(network.veth),
            yes_no(network.nf_tables),
            yes_no(network.macvlan),
            yes_no(network.vxlan),
            yes_no(network.ifb),
        );
        println!(
            "ip forwarding: {} (berth turns it on when it makes a network with NAT)",
            if network.ip_forward { "on" } else { "off" }
        );
        println!(
            "bridge:        {} (its nf_tables table has the same name)",
            global.bridge
        );
    }
    Ok(0)
}

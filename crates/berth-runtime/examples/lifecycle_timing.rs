//! Times each phase of the container lifecycle through the library API:
//! `cargo run --release -p berth-runtime --example lifecycle_timing -- LAYER_DIR [RUNS] [host|none] [autostart] [pause-ms=MS]`
//!
//! LAYER_DIR is an unpacked root file system (for example a busybox layer
//! from `berth image inspect`). Prints medians of create, start, wait,
//! delete (teardown) and the total, in milliseconds. With `autostart`,
//! create and start are one step (`create_and_start`, as `berth run`
//! does) and `start` reads zero. With `pause-ms=MS`, the host idles MS
//! milliseconds before each run (after-idle starts). With
//! `BERTH_STAGE_TIMINGS=1` it also prints the child's stages.

use berth_core::{ByteSize, ContainerId};
use berth_runtime::{
    ContainerSpec, Limits, ProcessSpec, RootfsSpec, Runtime, RuntimeConfig, StdioFds,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(layer) = args.next().map(PathBuf::from) else {
        eprintln!("usage: lifecycle_timing LAYER_DIR [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let network = match args.next().as_deref() {
        Some("host") => berth_runtime::NetworkNamespace::Host,
        _ => berth_runtime::NetworkNamespace::New,
    };
    let mut autostart = false;
    let mut pause = std::time::Duration::ZERO;
    for arg in args {
        if arg == "autostart" {
            autostart = true;
        } else if let Some(ms) = arg.strip_prefix("pause-ms=").and_then(|v| v.parse().ok()) {
            pause = std::time::Duration::from_millis(ms);
        } else {
            eprintln!("unknown argument {arg:?}");
            std::process::exit(2);
        }
    }
    let dir = std::env::temp_dir().join(format!("berth-timing-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeConfig {
        containers_dir: dir.join("containers"),
        cgroup_parent: "berth".into(),
    })
    .expect("runtime");
    let mut phases: [Vec<f64>; 5] = Default::default();
    let mut stages: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for i in 0..runs {
        let spec = ContainerSpec {
            id: ContainerId::new(format!("timing-{}-{i}", std::process::id())).unwrap(),
            rootfs: RootfsSpec {
                layers: vec![layer.clone()],
                read_only: false,
                scratch: Default::default(),
                scratch_size: None,
            },
            process: ProcessSpec {
                args: vec!["true".into()],
                env: vec!["PATH=/bin:/usr/bin".into()],
                cwd: "/".into(),
                user: Default::default(),
                rlimits: vec![],
                terminal: false,
            },
            hostname: None,
            network: network.clone(),
            mounts: vec![],
            limits: Limits {
                memory: Some(ByteSize::mib(64)),
                pids: Some(64),
                ..Limits::default()
            },
        };
        std::thread::sleep(pause);
        let t0 = Instant::now();
        let mut c = if autostart {
            runtime.create_and_start(&spec, StdioFds::default())
        } else {
            runtime.create(&spec, StdioFds::default())
        }
        .expect("create");
        let t1 = Instant::now();
        if !autostart {
            c.start().expect("start");
        }
        let t2 = Instant::now();
        c.wait(None).expect("wait");
        for (i, (stage, ns)) in c.setup_timings().into_iter().enumerate() {
            stages
                .entry(format!("{i:02} {stage}"))
                .or_default()
                .push(ns as f64 / 1e6);
        }
        let t3 = Instant::now();
        c.delete().expect("delete");
        let t4 = Instant::now();
        for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)]
            .into_iter()
            .enumerate()
        {
            phases[k].push((b - a).as_secs_f64() * 1000.0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (stage, mut v) in stages {
        v.sort_by(|a, b| a.total_cmp(b));
        println!("  child {stage:<20} median {:.3} ms", v[v.len() / 2]);
    }
    for (name, mut v) in ["create", "start", "wait", "delete", "total"]
        .into_iter()
        .zip(phases)
    {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:>7}: median {:.3} ms  p90 {:.3} ms",
            v[v.len() / 2],
            v[v.len() * 9 / 10]
        );
    }
}

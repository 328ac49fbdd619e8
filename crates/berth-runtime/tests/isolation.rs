//! A container sees only itself: its own pids, hostname, mounts, network
//! and files; the host stays out of reach except through volumes.

mod common;
use berth_runtime::{BindMount, NetworkNamespace};

#[test]
fn has_its_own_pid_namespace() {
    let env = common::Env::new();
    let out = env.run(&env.sh("echo $$; ls /proc | grep -c '^[0-9]'"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "the command is pid 1: {:?}", out.stdout);
    // sh, ls and grep at most: no host process is visible.
    let visible: u32 = lines[1].trim().parse().unwrap();
    assert!(visible <= 3, "saw {visible} processes");
    env.assert_clean();
}

#[test]
fn has_its_own_hostname() {
    let env = common::Env::new();
    let mut spec = env.sh("hostname");
    spec.hostname = Some("task-7".into());
    assert_eq!(env.run(&spec).stdout.trim(), "task-7");
    let spec = env.sh("hostname");
    let expected: String = spec.id.as_str().chars().take(12).collect();
    assert_eq!(env.run(&spec).stdout.trim(), expected);
    env.assert_clean();
}

/// The host's mount tree, copied into the container's namespace and
/// detached after the pivot (on a helper, while setup goes on), is gone by
/// the time the command runs: with the pivot early (the default), last
/// (after volumes), before a read-only remount of the root, and without the
/// wait for the network namespace (host network).
#[test]
fn sees_only_its_own_mounts() {
    let env = common::Env::new();
    let volume = env.dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let default = env.sh("cat /proc/self/mounts");
    let mut with_volume = env.sh("cat /proc/self/mounts");
    with_volume.mounts = vec![BindMount {
        source: volume.clone(),
        destination: "/data".into(),
        read_only: false,
    }];
    let mut read_only = env.sh("cat /proc/self/mounts; touch /x 2>/dev/null || echo ro");
    read_only.rootfs.read_only = true;
    let mut host_network = env.sh("cat /proc/self/mounts");
    host_network.network = NetworkNamespace::Host;
    for spec in [default, with_volume, read_only, host_network] {
        let out = env.run(&spec);
        assert!(
            out.stdout.starts_with("overlay / overlay"),
            "{}",
            out.stdout
        );
        for line in out.stdout.lines().filter(|l| *l != "ro") {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mount_point, fstype) = (fields[1], fields[2]);
            assert!(
                !mount_point.starts_with("/sys/fs/cgroup"),
                "host cgroups visible: {line}"
            );
            // Only the volume may come from the host's disk.
            assert!(
                fstype != "ext4" || mount_point == "/data",
                "a host file system is visible: {line}"
            );
        }
        if spec.rootfs.read_only {
            assert!(out.stdout.ends_with("ro\n"), "{}", out.stdout);
        }
    }
    // The container's mounts never appear on the host.
    let host = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!host.contains(&env.dir.path().to_string_lossy().into_owned()));
    env.assert_clean();
}

#[test]
fn host_files_are_unreachable_outside_volumes() {
    let env = common::Env::new();
    let secret = env.dir.path().join("host-secret");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    let out = env.run(&env.sh(&format!(
        "cat {0} 2>&1; ls /var/tmp 2>&1; cat /proc/1/root{0} 2>&1; echo done",
        secret.display()
    )));
    assert!(!out.stdout.contains("TOP SECRET"), "{}", out.stdout);
    assert!(out.stdout.contains("done"));
    env.assert_clean();
}

#[test]
fn symlinks_in_the_image_cannot_redirect_mounts_to_the_host() {
    use berth_core::HasErrorCode;
    let env = common::Env::new();
    // An image whose /proc is an absolute symlink naming a host directory.
    let layer = env.dir.path().join("layers").join("evil");
    common::make_busybox_layer(&layer);
    let target = env.dir.path().join("host-target");
    std::fs::create_dir(&target).unwrap();
    std::fs::remove_dir(layer.join("proc")).unwrap();
    std::os::unix::fs::symlink(&target, layer.join("proc")).unwrap();

    // Dangling inside the image: refused with a clear error.
    let mut spec = env.sh("true");
    spec.rootfs.layers = vec![layer.clone()];
    let err = env
        .try_run(&spec)
        .err()
        .expect("dangling mount target refused");
    assert_eq!(
        err.code(),
        berth_core::ErrorCode::RootfsSetupFailed,
        "{err}"
    );

    // Present inside the image: followed inside the rootfs.
    std::fs::create_dir_all(layer.join(target.strip_prefix("/").unwrap())).unwrap();
    let mut spec = env.sh("test -e /proc/self/status && echo proc-ok");
    spec.rootfs.layers = vec![layer];
    let out = env.run(&spec);
    assert_eq!(out.stdout.trim(), "proc-ok", "stderr: {}", out.stderr);

    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "host dir was written"
    );
    let host = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!host.contains(&target.to_string_lossy().into_owned()));
    env.assert_clean();
}

#[test]
fn volumes_bind_host_paths_read_write_or_read_only() {
    let env = common::Env::new();
    let shared = env.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("in.txt"), "from host").unwrap();
    let mut spec = env.sh("cat /data/in.txt; echo from-container > /data/out.txt");
    spec.mounts = vec![BindMount {
        source: shared.clone(),
        destination: "/data".into(),
        read_only: false,
    }];
    let out = env.run(&spec);
    assert_eq!(out.stdout.trim(), "from host");
    assert_eq!(
        std::fs::read_to_string(shared.join("out.txt")).unwrap(),
        "from-container\n"
    );

    let mut spec = env.sh("echo x > /data/denied.txt || echo refused");
    spec.mounts = vec![BindMount {
        source: shared.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    assert_eq!(env.run(&spec).stdout.trim(), "refused");
    assert!(!shared.join("denied.txt").exists());
    env.assert_clean();
}

/// Docker's masked paths win over volumes, even one mounted inside /proc
/// (the masks then come after the volumes).
#[test]
fn masked_paths_hide_a_volume_mounted_over_them() {
    let env = common::Env::new();
    let file = env.dir.path().join("fake-interrupts");
    std::fs::write(&file, "FROM THE HOST").unwrap();
    let mut spec = env.sh("wc -c < /proc/interrupts; echo done");
    spec.mounts = vec![BindMount {
        source: file,
        destination: "/proc/interrupts".into(),
        read_only: true,
    }];
    let out = env.run(&spec);
    assert_eq!(out.stdout, "0\ndone\n", "stderr: {}", out.stderr);
    env.assert_clean();
}

/// Every masked directory is the same empty, read-only tmpfs (bind mounts
/// of the first), not a tmpfs each.
#[test]
fn masked_directories_share_one_empty_read_only_tmpfs() {
    let env = common::Env::new();
    let dirs = ["/proc/asound", "/proc/acpi", "/proc/scsi", "/sys/firmware"];
    let script = dirs
        .iter()
        .map(|d| {
            format!(
                "if [ -d {d} ]; then \
                   set -- $(grep ' {d} ' /proc/self/mountinfo); \
                   echo \"{d} $3 $6 $(ls -A {d} | wc -l) $(touch {d}/x 2>/dev/null && echo writable)\"; \
                 fi; "
            )
        })
        .collect::<String>();
    let out = env.run(&env.sh(&script));
    let masks: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        !masks.is_empty(),
        "no masked directory found; stderr: {}",
        out.stderr
    );
    for mask in &masks {
        // path, major:minor, mount options, entries; nothing about writable
        assert_eq!(mask.len(), 4, "{mask:?}; stderr: {}", out.stderr);
        assert!(mask[2].split(',').any(|o| o == "ro"), "{mask:?}");
        assert_eq!(mask[3], "0", "{mask:?}");
        assert_eq!(mask[1], masks[0][1], "not one tmpfs: {masks:?}");
    }
    env.assert_clean();
}

#[test]
fn default_network_is_only_loopback() {
    let env = common::Env::new();
    let out = env.run(&env.sh("ls /sys/class/net; cat /proc/net/dev | tail -n +3 | cut -d: -f1"));
    let ifaces: Vec<&str> = out.stdout.split_whitespace().collect();
    // /sys shows the namespace of whoever mounted it, /proc/net the reader's.
    assert_eq!(ifaces, ["lo", "lo"], "stderr: {}", out.stderr);
    // Loopback works: a listener and a client inside the container.
    let out = env.run(&env.sh(
        // Retry until the listener is up (a loaded machine may take a
        // while to schedule it); it exits after one connection. Its stdin
        // is a FIFO held open by the shell: busybox nc quits at the end of
        // its input, and with stdin from /dev/null it could quit before
        // reading what the client sent (a test race, ~1 run in 30 under
        // load).
        "mkfifo /tmp/in; nc -l -p 7777 < /tmp/in > /tmp/got & listener=$!; exec 3> /tmp/in; \
         for i in $(seq 100); do echo ping | nc -w 1 127.0.0.1 7777 && break; sleep 0.05; done; \
         wait $listener; cat /tmp/got",
    ));
    assert_eq!(out.stdout.trim(), "ping", "stderr: {}", out.stderr);
    env.assert_clean();
}

/// Created, then started (the agent's path): the setup ran on the CPUs other
/// than the caller's (the child moved itself, and the parent moved it too);
/// the command gets every CPU back.
#[test]
fn the_command_may_use_every_cpu_its_supervisor_may() {
    let env = common::Env::new();
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let allowed = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/thread-self/status");
    let out = env.run(&env.sh("grep Cpus_allowed_list: /proc/self/status"));
    assert_eq!(out.stdout.trim(), allowed.trim(), "stderr: {}", out.stderr);
    // With the host network the child's setup never waits for the parent,
    // so it may finish before the parent has moved it: the widening must
    // still come last.
    let mut spec = env.sh("grep Cpus_allowed_list: /proc/self/status");
    spec.network = NetworkNamespace::Host;
    let out = env.run(&spec);
    assert_eq!(out.stdout.trim(), allowed.trim(), "stderr: {}", out.stderr);
    env.assert_clean();
}

#[test]
fn host_network_is_opt_in() {
    let env = common::Env::new();
    let mut spec = env.sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1");
    spec.network = NetworkNamespace::Host;
    // Other tests add and remove links meanwhile: every link there both
    // before and after the run must have been seen.
    let links = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let before = links();
    let out = env.run(&spec).stdout;
    let after = links();
    let seen: std::collections::BTreeSet<String> =
        out.lines().map(|l| l.trim().to_owned()).collect();
    let steady: Vec<&String> = before.intersection(&after).collect();
    assert!(steady.len() > 1, "the host has more than a loopback");
    for link in steady {
        assert!(seen.contains(link), "{link} not seen; saw {seen:?}");
    }
    env.assert_clean();
}

#[test]
fn proc_and_sys_are_locked_down() {
    let env = common::Env::new();
    let out = env.run(&env.sh(
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; \
         touch /sys/x 2>/dev/null && echo sysfs-writable; \
         cat /proc/kcore | head -c 1 | wc -c; \
         ls /proc/acpi 2>/dev/null | wc -l; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mounted; \
         echo end",
    ));
    let text = out.stdout;
    assert!(!text.contains("writable"), "{text}");
    assert!(!text.contains("mounted"), "{text}");
    assert!(text.contains("end"));
    env.assert_clean();
}

#[test]
fn runs_with_docker_default_capabilities_and_seccomp() {
    let env = common::Env::new();
    let out = env.run(&env.sh("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"));
    // Docker's default set is 0xa80425fb (CAP_MKNOD dropped where no device
    // cgroup exists).
    let text = out.stdout;
    let eff = text.lines().find(|l| l.starts_with("CapEff")).unwrap();
    let eff = u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & !(1 << 27), 0xa80425fb & !(1 << 27), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    // unshare is refused by seccomp and capabilities alike.
    let out = env.run(&env.sh("unshare -n true 2>&1 || echo refused"));
    assert!(out.stdout.contains("refused"), "{}", out.stdout);
    env.assert_clean();
}

#[test]
fn read_only_root_refuses_writes() {
    let env = common::Env::new();
    let mut spec =
        env.sh("touch /newfile 2>/dev/null || echo ro; touch /dev/shm/ok && echo shm-ok");
    spec.rootfs.read_only = true;
    let out = env.run(&spec);
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["ro", "shm-ok"]
    );
    env.assert_clean();
}

#[test]
fn writes_never_reach_the_image_layer() {
    let env = common::Env::new();
    let out = env.run(&env.sh("echo changed > /etc/passwd; rm /bin/ls; echo ok"));
    assert_eq!(out.stdout.trim(), "ok");
    assert!(std::fs::read_to_string(env.layer.join("etc/passwd"))
        .unwrap()
        .starts_with("root:"));
    assert!(env.layer.join("bin/ls").exists());
    env.assert_clean();
}

#[test]
fn runs_as_the_requested_user_with_env_and_workdir() {
    let env = common::Env::new();
    let mut spec =
        env.sh("id -u; id -g; id -G; pwd; echo $GREETING; grep CapEff /proc/self/status");
    spec.process.user = berth_runtime::User {
        uid: 65534,
        gid: 65534,
        additional_gids: vec![100],
    };
    spec.process.cwd = "/work/dir".into();
    spec.process.env.push("GREETING=hello".into());
    let out = env.run(&spec);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        ["65534", "65534", "65534 100", "/work/dir", "hello"],
        "{}",
        out.stderr
    );
    assert!(
        lines[5].ends_with("0000000000000000"),
        "non-root keeps no capabilities: {}",
        lines[5]
    );
    env.assert_clean();
}

#[test]
fn dev_has_the_standard_nodes_only() {
    let env = common::Env::new();
    let out = env
        .run(&env.sh("ls /dev; echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c"));
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(
            out.stdout.split_whitespace().any(|n| n == node),
            "{node} missing: {}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("vda"),
        "host block device visible: {}",
        out.stdout
    );
    assert!(out.stdout.contains("null-ok"));
    env.assert_clean();
}

#[test]
fn disk_scratch_keeps_writes_under_the_data_dir_until_teardown() {
    let env = common::Env::new();
    let mut spec = env.sh("echo data > /written; cat /written");
    spec.rootfs.scratch = berth_runtime::Scratch::Disk;
    let out = env.run(&spec);
    assert_eq!(out.stdout, "data\n", "{}", out.stderr);
    env.assert_clean();
}

#[test]
fn memory_scratch_is_private_and_bounded() {
    let env = common::Env::new();
    let mut spec = env.sh("echo data > /written; cat /written; \
         dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null || echo full");
    spec.rootfs.scratch_size = Some(berth_core::ByteSize::mib(4));
    let out = env.run(&spec);
    assert_eq!(out.stdout, "data\nfull\n", "{}", out.stderr);
    // Nothing of the writable layer ever appears on the host.
    let dir = env.containers_dir();
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0);
    env.assert_clean();
}

#[test]
fn cgroup_namespace_is_rooted_at_the_container() {
    let env = common::Env::new();
    let mut spec = env.sh("cat /proc/self/cgroup");
    spec.limits.memory = Some(berth_core::ByteSize::mib(64));
    let out = env.run(&spec);
    let memory = out
        .stdout
        .lines()
        .find(|l| l.contains(":memory:"))
        .unwrap_or_else(|| panic!("no memory line: {}", out.stdout));
    assert!(memory.ends_with(":/"), "{memory}");
    env.assert_clean();
}

#[test]
fn device_nodes_made_inside_cannot_reach_host_disks() {
    let env = common::Env::new();
    if !env.runtime.cgroups().restricts_devices() {
        // cgroup v2 hosts: CAP_MKNOD is dropped instead.
        let out = env.run(&env.sh("mknod /tmp/disk b 254 0 2>&1 || echo refused"));
        assert!(out.stdout.contains("refused"), "{}", out.stdout);
        return;
    }
    let try_disk = || {
        env.run(&env.sh(
            "mknod /tmp/disk b 254 0 && head -c 1 /tmp/disk >/dev/null 2>&1 && echo READ || echo denied",
        ))
    };
    // The parent got the containers' rules before the first container was
    // made; every container inherits them.
    for _ in 0..2 {
        let out = try_disk();
        assert_eq!(out.stdout.trim(), "denied", "stderr: {}", out.stderr);
    }
    // A parent someone opened up to the disk must not hand that on.
    let parent = std::path::Path::new("/sys/fs/cgroup/devices").join(env.cgroup_parent());
    std::fs::write(parent.join("devices.allow"), "b 254:0 rwm").unwrap();
    let out = try_disk();
    assert_eq!(out.stdout.trim(), "denied", "stderr: {}", out.stderr);
    env.assert_clean();
}

#[test]
fn device_nodes_shipped_in_an_image_are_inert() {
    let env = common::Env::new();
    let layer = env.dir.path().join("layers").join("with-devices");
    common::make_busybox_layer(&layer);
    // The host's first virtio disk, as a hostile image might ship it.
    let node = std::ffi::CString::new(layer.join("disk").to_str().unwrap()).unwrap();
    // SAFETY: mknod of a test file inside our own temp dir.
    let rc = unsafe { libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o666, libc::makedev(254, 0)) };
    assert_eq!(rc, 0);
    let mut spec = env.sh("head -c 1 /disk >/dev/null 2>&1 && echo READ || echo refused");
    spec.rootfs.layers = vec![layer];
    let out = env.run(&spec);
    assert_eq!(out.stdout.trim(), "refused", "stderr: {}", out.stderr);
    env.assert_clean();
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct MountGuard(std::ffi::CString);

impl Drop for MountGuard {
    fn drop(&mut self) {
        // SAFETY: unmounting a path this test mounted.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn read_only_volumes_are_read_only_all_the_way_down() {
    let env = common::Env::new();
    let shared = env.dir.path().join("shared");
    let sub = shared.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let sub_c = std::ffi::CString::new(sub.to_str().unwrap()).unwrap();
    // SAFETY: mounting a private tmpfs on a test directory.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            sub_c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    let guard = MountGuard(sub_c);
    let mut spec = env.sh("touch /data/top 2>/dev/null && echo top-writable; \
         touch /data/sub/deep 2>/dev/null && echo sub-writable; echo done");
    spec.mounts = vec![berth_runtime::BindMount {
        source: shared.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    let out = env.run(&spec);
    assert_eq!(out.stdout.trim(), "done", "{}", out.stdout);
    assert!(!sub.join("deep").exists());
    drop(guard);
    env.assert_clean();
}

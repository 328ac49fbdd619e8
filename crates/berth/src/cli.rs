//! Command-line flags (clap). Every flag has a `BERTH_*` twin where it makes
//! sense for scripts.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

mod platform;

pub use platform::*;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run every task in its own Linux container, in milliseconds.",
    long_about = "berth runs commands in isolated Linux containers built from layered images.\n\n\
Start here:\n  \
berth image import busybox ./busybox.tar.gz   # add an image from a tarball\n  \
berth run busybox echo hello                  # run a command in a fresh container\n  \
berth run --memory 64m --timeout 5s busybox sh -c 'do-work'\n\n\
Exit codes: berth run returns the container's exit code (128+N when killed by\n\
signal N); 125 means berth itself failed, 126 the command cannot be executed,\n\
127 the command was not found, 2 bad usage."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether errors should be printed as JSON (the subcommand asked for it).
    pub fn wants_json(&self) -> bool {
        match &self.command {
            Command::Run(a) => a.json,
            Command::Image(a) => a.json(),
            Command::Gc(a) => a.json,
            Command::Network(a) => a.json(),
            Command::Info(a) => a.json,
            Command::Code(a) => a.json(),
            Command::Task(a) => a.json(),
            Command::Schedule(a) => a.json(),
            Command::Overlay(a) => a.json(),
            Command::Node(a) => a.json(),
            Command::Pool(a) => a.json(),
            // berthd reports its own errors.
            Command::Agent(_)
            | Command::Server(_)
            | Command::Up(_)
            | Command::Project(_)
            | Command::Token(_)
            | Command::Stack(_) => false,
        }
    }
}

/// The flags every command takes, berth's and berthd's alike.
#[derive(Debug, Args)]
pub struct Global {
    /// Where images and container files live.
    #[arg(
        long,
        global = true,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth"
    )]
    pub data_dir: PathBuf,
    /// Name of berth's parent cgroup in every hierarchy.
    #[arg(
        long,
        global = true,
        env = "BERTH_CGROUP_PARENT",
        default_value = "berth"
    )]
    pub cgroup_parent: String,
    /// The default network's bridge device; berth's nf_tables table has the same name.
    #[arg(long, global = true, env = "BERTH_BRIDGE", default_value = "berth0")]
    pub bridge: String,
    /// Where `--network cni:NAME` finds CNI configurations.
    #[arg(
        long,
        global = true,
        env = "BERTH_CNI_CONF_DIR",
        default_value = "/etc/cni/net.d"
    )]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are, ':'-separated (Debian's, then the upstream default).
    #[arg(
        long,
        global = true,
        env = "BERTH_CNI_PATH",
        default_value = "/usr/lib/cni:/opt/cni/bin"
    )]
    pub cni_path: String,
    /// More logging (--verbose info, twice for debug); BERTH_LOG takes a tracing filter.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// The CNI directories the flags name.
    pub fn cni_paths(&self) -> berth_net::cni::CniPaths {
        berth_net::cni::CniPaths {
            conf_dir: self.cni_conf_dir.clone(),
            plugin_dirs: std::env::split_paths(&self.cni_path).collect(),
        }
    }
}

// `defer`: a subcommand's arguments are only built when it is the one
// being run, so `berth run` does not pay for the rest of the CLI.
//
// The daemons and the operator commands (agent … stack) are served by
// `berthd`, which links the server, the store and the agent: berth hands
// them over with their arguments untouched (`--help` included, hence no
// help flag of their own here).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run a command in a new container, then remove the container.
    Run(Box<RunArgs>),
    /// Manage images: import, ls, inspect, rm, prune.
    Image(ImageArgs),
    /// Manage container networks: create, ls, inspect, rm.
    Network(NetworkArgs),
    /// Remove what crashed berth processes left behind (cgroups, container dirs, leases).
    Gc(GcArgs),
    /// Show what this host supports (cgroup layout, kernel features).
    Info(InfoArgs),
    /// Run the host agent: the HTTP API that runs containers for the control plane.
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Agent(DaemonArgs),
    /// Run the control plane: the IronWorker-compatible task API and the dispatcher
    /// (`berth server ls`: the servers sharing its store).
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Server(DaemonArgs),
    /// Run everything on this machine: server, local agent, SQLite and a default stack.
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Up(DaemonArgs),
    /// Manage projects (operator; opens the server's database).
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Project(DaemonArgs),
    /// Manage a project's API tokens (operator; opens the server's database).
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Token(DaemonArgs),
    /// Map classic runtimes (sh, python, …) to images (operator; opens the server's database).
    #[command(disable_help_flag = true, after_help = SERVED_BY_BERTHD)]
    Stack(DaemonArgs),
    /// Push and manage codes on a berth server.
    Code(CodeArgs),
    /// Queue, list, follow, cancel and retry tasks on a berth server.
    Task(TaskArgs),
    /// Create, list and cancel schedules on a berth server.
    Schedule(ScheduleArgs),
    /// A project's overlay networks across the fleet: create, ls, inspect, rm.
    Overlay(OverlayArgs),
    /// The fleet's hosts: ls, inspect, drain, undrain, label, rm (operator).
    Node(NodeArgs),
    /// Fair-share pools: ls, set, rm (operator).
    Pool(PoolArgs),
}

/// What `berth help COMMAND` says of the commands berthd serves.
const SERVED_BY_BERTHD: &str = "berthd serves this command (berth runs it): \
`berth COMMAND --help` shows its flags.";

// The arguments of a command berthd serves, which berth passes on without
// reading them. (A `//` comment: clap would show a doc comment as the
// command's help.)
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Flags and arguments (see `berth COMMAND --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run busybox true\n  berth run -it busybox sh\n  \
berth run --memory 64m --pids-limit 32 --timeout 10s busybox sh -c 'work'\n  \
berth run -v /srv/data:/data:ro --network host busybox ls /data\n  \
berth run --network bridge -p 8080:80 web httpd -f -p 80\n  \
berth run --json busybox true      # result as JSON on the last line of stdout"
)]
pub struct RunArgs {
    /// Image reference, NAME[:TAG].
    pub image: String,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,

    /// Container id (default: a random one).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User to run as: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name (default: the first 12 characters of its id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network: `none` (private, loopback only), `host`, `bridge` (berth's
    /// bridge, NAT to the outside) or a network made with `berth network create`.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Publish a container port: [HOSTIP:]HOSTPORT:PORT[/tcp|udp], ranges allowed
    /// (repeatable; needs `bridge` or a user network).
    #[arg(short = 'p', long = "publish", value_name = "[HOSTIP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
    /// A fixed IPv4 address on a user network.
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Cap what the container sends, e.g. 10mbit, 500kbit, 1mbps (bytes): shaped
    /// by the kernel on the host end of its link.
    #[arg(long, value_name = "RATE")]
    pub egress_rate: Option<String>,
    /// Cap what the container receives (same units).
    #[arg(long, value_name = "RATE")]
    pub ingress_rate: Option<String>,
    /// Bind a host path: SRC:DST[:ro] (repeatable).
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    pub volume: Vec<String>,
    /// Mount the root file system read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Where the container's writes go: `memory` (a private tmpfs, fastest,
    /// counted in the container's memory) or `disk` (under the data dir).
    #[arg(long, default_value = "memory", value_parser = ["memory", "disk"])]
    pub scratch: String,
    /// Cap on the container's writes with memory scratch (e.g. 256m).
    #[arg(long, value_name = "SIZE")]
    pub scratch_size: Option<String>,
    /// Keep stdin open and attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,

    /// Memory limit (e.g. 64m, 1g); the container is OOM-killed above it.
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap (default: equal to --memory, i.e. no swap); -1 = unlimited swap.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<String>,
    /// Relative CPU weight (2-262144, default 1024).
    #[arg(long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Kill the container after this long (e.g. 500ms, 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Resource limit, NAME=SOFT[:HARD] (nofile, nproc, core, fsize, stack, memlock, cpu, as).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,

    /// Also write the container's stdout and stderr to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Print the result (exit code, flags, times, peak memory) as JSON on
    /// the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

impl ImageArgs {
    fn json(&self) -> bool {
        match &self.command {
            ImageCommand::Import { json, .. }
            | ImageCommand::Ls { json }
            | ImageCommand::Rm { json, .. }
            | ImageCommand::Prune { json } => *json,
            ImageCommand::Inspect { .. } => true,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Import an image from a rootfs tarball (plain, gzip, zstd), a `docker save`
    /// archive, or an OCI image layout (directory or tar).
    #[command(
        after_help = "Examples:\n  berth image import busybox ./busybox-rootfs.tar.gz\n  \
docker save app:1 | gzip > app.tar.gz && berth image import app:1 app.tar.gz\n  \
berth image import app:1 ./oci-layout-dir"
    )]
    Import {
        /// Reference to give the image, NAME[:TAG].
        reference: String,
        /// The archive or layout directory.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an image's layers and defaults (JSON).
    Inspect { reference: String },
    /// Remove an image reference (its layers stay until `prune`).
    #[command(alias = "remove")]
    Rm {
        reference: String,
        /// Remove even if a running container uses it.
        #[arg(short, long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete layers and blobs no image or container references.
    Prune {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub command: NetworkCommand,
}

impl NetworkArgs {
    fn json(&self) -> bool {
        match &self.command {
            NetworkCommand::Create(args) => args.json,
            NetworkCommand::Ls { json } | NetworkCommand::Rm { json, .. } => *json,
            NetworkCommand::Inspect { .. } => true,
        }
    }
}

// `berth network create`'s flags (the command's help is on NetworkCommand::Create).
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Letters, digits, '_', '.' and '-'; not none, host, bridge or default.
    pub name: String,
    /// `bridge` (a bridge of its own, NAT out), `macvlan` (containers on the
    /// --parent interface's own network) or `overlay` (a bridge joined to the
    /// same network on other hosts by VXLAN: give the same --vni and --subnet
    /// on each, and the others' addresses with --peer).
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "macvlan", "overlay"])]
    pub driver: String,
    /// Overlay: the VXLAN network id, 1-16777215, the same on every host.
    #[arg(long)]
    pub vni: Option<u32>,
    /// Overlay: another host of the network, by the address VXLAN reaches it at
    /// (repeatable).
    #[arg(long = "peer", value_name = "ADDRESS")]
    pub peers: Vec<std::net::Ipv4Addr>,
    /// Overlay: this host's address for VXLAN (default: the route's choice).
    #[arg(long)]
    pub local: Option<std::net::Ipv4Addr>,
    /// Where this host gives addresses from, within the subnet (hosts of an
    /// overlay with no server to hand out addresses each take their own).
    #[arg(long)]
    pub ip_range: Option<ipnet::Ipv4Net>,
    /// The MTU of the containers' links, 576-65535 (default 1500; overlays 1450):
    /// a large one speeds up traffic on the host (65535 reaches loopback's speed).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// The host interface a macvlan network's containers hang off.
    #[arg(long)]
    pub parent: Option<String>,
    /// IPv4 subnet, e.g. 10.42.0.0/24 (default: a free /24 of 10.96.0.0/11; a
    /// macvlan network takes its parent's).
    #[arg(long)]
    pub subnet: Option<ipnet::Ipv4Net>,
    /// The bridge's address (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// No way out: no NAT, and the host's addresses are out of reach.
    #[arg(long)]
    pub internal: bool,
    #[arg(long)]
    pub json: bool,
}

impl NetworkCreateArgs {
    /// The request the flags make.
    pub fn request(self) -> berth_net::CreateNetwork {
        berth_net::CreateNetwork {
            driver: match self.driver.as_str() {
                "macvlan" => berth_net::Driver::Macvlan,
                "overlay" => berth_net::Driver::Overlay,
                _ => berth_net::Driver::Bridge,
            },
            name: self.name,
            parent: self.parent,
            subnet: self.subnet,
            gateway: self.gateway,
            internal: self.internal,
            ip_range: self.ip_range,
            vni: self.vni,
            local: self.local,
            peers: self.peers,
            mtu: self.mtu,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// Make a network: a bridge of its own, with NAT to the outside unless --internal.
    /// Containers join it with `berth run --network NAME` and reach each other by name.
    #[command(after_help = "Examples:\n  berth network create backend\n  \
berth network create --subnet 10.42.0.0/24 --internal db\n  \
berth network create --driver macvlan --parent eth1 lan\n  \
berth network create --driver overlay --vni 42 --subnet 10.42.0.0/16 --ip-range 10.42.1.0/24 --peer 192.0.2.3 ov\n  \
berth run --network db --ip 10.42.0.10 --name pg postgres")]
    Create(Box<NetworkCreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a network and the containers on it (JSON).
    Inspect { name: String },
    /// Remove networks no container uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_berthd_serves_take_any_arguments_help_included() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["berth", "up", "--help"], &["--help"]),
            (&["berth", "up"], &[]),
            (
                &[
                    "berth",
                    "server",
                    "--listen",
                    "0.0.0.0:1",
                    "--agent",
                    "unix:///a",
                ],
                &["--listen", "0.0.0.0:1", "--agent", "unix:///a"],
            ),
            (
                &["berth", "token", "create", "p1", "--name", "ci", "-h"],
                &["create", "p1", "--name", "ci", "-h"],
            ),
        ];
        for (argv, passed) in cases {
            let cli = Cli::try_parse_from(*argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let (Command::Up(args) | Command::Server(args) | Command::Token(args)) = cli.command
            else {
                panic!("{argv:?} parsed as {:?}", cli.command)
            };
            assert_eq!(args.args, *passed, "{argv:?}");
        }
    }

    #[test]
    fn run_takes_docker_style_flags() {
        let cli = Cli::try_parse_from([
            "berth", "run", "-v", "/a:/b", "-e", "X=1", "-m", "64m", "-it", "img", "sh", "-c", "x",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.volume, ["/a:/b"]);
        assert_eq!(args.memory.as_deref(), Some("64m"));
        assert!(args.interactive && args.tty);
        assert_eq!(args.command, ["sh", "-c", "x"]);
    }

    #[test]
    fn client_flags_go_anywhere_and_push_keeps_its_config() {
        let cli = Cli::try_parse_from([
            "berth",
            "code",
            "--url",
            "h:1",
            "push",
            "app",
            "--image",
            "busybox",
            "--config",
            "x: 1",
            "--client-config",
            "/c.json",
            "--token",
            "t",
        ])
        .unwrap();
        let Command::Code(args) = cli.command else {
            panic!("not code")
        };
        assert_eq!(args.client.url.as_deref(), Some("h:1"));
        assert_eq!(args.client.token.as_deref(), Some("t"));
        assert_eq!(args.client.config, Some(PathBuf::from("/c.json")));
        let CodeCommand::Push(push) = args.command else {
            panic!("not push")
        };
        assert_eq!(push.config.as_deref(), Some("x: 1"));
    }

    #[test]
    fn code_push_needs_one_form() {
        for argv in [
            &["berth", "code", "push", "app"][..],
            &[
                "berth",
                "code",
                "push",
                "app",
                "--image",
                "i",
                "--runtime",
                "sh",
                "--file",
                "f",
            ],
            &["berth", "code", "push", "app", "--runtime", "sh"],
            &["berth", "task", "queue", "app", "--priority", "3"],
            &["berth", "task", "ls", "--per-page", "101"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} parsed");
        }
        let cli = Cli::try_parse_from([
            "berth",
            "task",
            "queue",
            "app",
            "--timeout",
            "5m",
            "--count",
            "3",
        ])
        .unwrap();
        let Command::Task(args) = cli.command else {
            panic!("not task")
        };
        let TaskCommand::Queue(queue) = args.command else {
            panic!("not queue")
        };
        assert_eq!((queue.timeout, queue.count), (Some(300), 3));
    }
}

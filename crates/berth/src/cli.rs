//! Command-line flags (clap). Every flag has a `BERTH_*` twin where it makes
//! sense for scripts.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
            Command::Info(a) => a.json,
            Command::Agent(_) => false,
        }
    }
}

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
    /// More logging (--verbose info, twice for debug); BERTH_LOG takes a tracing filter.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container, then remove the container.
    Run(Box<RunArgs>),
    /// Manage images: import, ls, inspect, rm, prune.
    Image(ImageArgs),
    /// Remove what crashed berth processes left behind (cgroups, container dirs, leases).
    Gc(GcArgs),
    /// Show what this host supports (cgroup layout, kernel features).
    Info(InfoArgs),
    /// Run the host agent: the HTTP API that runs containers for the control plane.
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
#[command(
    long_about = "Runs the host agent in the foreground. It serves the /v1 API on a unix \
socket (and on TCP with --listen, where every request needs Authorization: Bearer <token>), \
starts one berth-shim per container, and can be killed, restarted or upgraded while \
containers run: a new agent rediscovers them from the data dir.\n\n\
The API is described at GET /v1/openapi.json.",
    after_help = "Examples:\n  berth agent\n  \
curl --unix-socket /var/lib/berth/agent.sock http://agent/v1/node\n  \
berth agent --listen 0.0.0.0:7420 --token-file /etc/berth/agent.token --label zone=a\n  \
berth agent --memory-ceiling 16g --memory-pressure 0.9"
)]
pub struct AgentArgs {
    /// Unix socket of the local API [default: <data dir>/agent.sock].
    #[arg(long, env = "BERTH_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Also serve the API on this TCP address (needs --token-file).
    #[arg(long, env = "BERTH_AGENT_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token TCP callers must present.
    #[arg(long, env = "BERTH_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A label reported by /v1/node (KEY=VALUE; repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Memory all containers together may use [default: 90% of RAM].
    #[arg(long, env = "BERTH_AGENT_MEMORY_CEILING")]
    pub memory_ceiling: Option<String>,
    /// Fraction of the ceiling at which the container furthest above its
    /// memory request is killed.
    #[arg(long, env = "BERTH_AGENT_MEMORY_PRESSURE", default_value_t = 0.9)]
    pub memory_pressure: f64,
    /// How often memory is sampled, e.g. 250ms.
    #[arg(long, default_value = "250ms")]
    pub memory_interval: String,
    /// The berth-shim binary [default: berth-shim next to this binary].
    #[arg(long, env = "BERTH_SHIM")]
    pub shim: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run busybox true\n  berth run -it busybox sh\n  \
berth run --memory 64m --pids-limit 32 --timeout 10s busybox sh -c 'work'\n  \
berth run -v /srv/data:/data:ro --network host busybox ls /data\n  \
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
    /// Network: `none` (private, loopback only) or `host`.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    pub network: String,
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
}

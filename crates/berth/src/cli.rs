//! Command-line flags (clap). Every flag has a `BERTH_*` twin where it makes
//! sense for scripts.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod operator;
mod platform;

pub use operator::*;
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
            Command::Info(a) => a.json,
            Command::Project(a) => a.json(),
            Command::Token(a) => a.json(),
            Command::Stack(a) => a.json(),
            Command::Code(a) => a.json(),
            Command::Task(a) => a.json(),
            Command::Schedule(a) => a.json(),
            Command::Agent(_) | Command::Server(_) | Command::Up(_) => false,
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

// `defer`: a subcommand's arguments are only built when it is the one
// being run, so `berth run` does not pay for the rest of the CLI.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// Run the control plane: the IronWorker-compatible task API and the dispatcher.
    Server(ServerArgs),
    /// Run everything on this machine: server, local agent, SQLite and a default stack.
    Up(UpArgs),
    /// Manage projects (operator; opens the server's database).
    Project(ProjectArgs),
    /// Manage a project's API tokens (operator; opens the server's database).
    Token(TokenArgs),
    /// Map classic runtimes (sh, python, …) to images (operator; opens the server's database).
    Stack(StackArgs),
    /// Push and manage codes on a berth server.
    Code(CodeArgs),
    /// Queue, list, follow, cancel and retry tasks on a berth server.
    Task(TaskArgs),
    /// Create, list and cancel schedules on a berth server.
    Schedule(ScheduleArgs),
}

impl Command {
    /// The commands that serve until stopped (see `handoff`).
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Agent(_) | Command::Server(_) | Command::Up(_)
        )
    }
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
    /// Keep per-container state (specs, records, sockets, logs) on a
    /// private tmpfs at <data dir>/agent/run: no disk I/O per
    /// container, but each log takes RAM (up to its cap) until the
    /// container is deleted. The mount outlives the agent while containers
    /// remain; the agent (at exit) or `berth gc` removes it once empty.
    #[arg(long, env = "BERTH_AGENT_STATE_TMPFS")]
    pub state_tmpfs: bool,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// The limits of every listening socket a daemon serves (the task API; the
/// agent's unix socket and TCP port, each counted on its own).
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Client connections open at once on each listener; more clients wait
    /// until one closes. The open-files limit must hold them plus 1024
    /// [default: 1024, or fewer if the open-files limit allows fewer].
    #[arg(long, env = "BERTH_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// Time a client has to send a request's headers, counted from when
    /// the server waits for them (also how long an idle kept-alive
    /// connection stays open), e.g. 30s.
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", default_value = "30s")]
    pub header_timeout: String,
    /// How long the server waits on a client that stopped sending a
    /// request body or reading a response, e.g. 60s.
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,
}

/// What a project may keep of its code (see `berth server --help`).
#[derive(Debug, Args)]
pub struct CodeLimitArgs {
    /// Most bytes one project's code packages may take unpacked (each
    /// distinct package of its kept revisions, once; e.g. 2GiB); 0 for no
    /// limit. Uploads over it are refused with 413.
    #[arg(long, env = "BERTH_MAX_PROJECT_PACKAGE_BYTES", default_value = "2GiB")]
    pub max_project_package_bytes: String,
    /// Revisions kept per code, newest first (and any a queued or running
    /// task uses); older ones and their packages are deleted. 0 keeps all.
    #[arg(long, env = "BERTH_CODE_REVISIONS_KEPT", default_value_t = berth_server::DEFAULT_CODE_REVISIONS_KEPT)]
    pub code_revisions_kept: u32,
}

/// Where the control plane keeps its state.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// sqlite://PATH or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite://<data dir>/server/berth.db].
    #[arg(long, env = "BERTH_DATABASE")]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Runs the control plane in the foreground: the IronWorker v2 task API under \
/2/projects/{project_id}/, the dispatcher that runs queued tasks on the agents given with \
--agent, and the schedule runner. State lives in SQLite (default) or PostgreSQL; the server \
can be killed and restarted while tasks run.",
    after_help = "Examples:\n  berth server --agent unix:///var/lib/berth/agent.sock\n  \
berth server --listen 0.0.0.0:8380 --database postgres://berth@db/berth \\\n    \
--agent http://host-a:7420 --agent-token-file /etc/berth/agent.token"
)]
pub struct ServerArgs {
    /// Address of the task API.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8380")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// An agent to run tasks on: unix:///PATH/agent.sock or http://HOST:PORT (repeatable).
    #[arg(long = "agent", env = "BERTH_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// File holding the bearer token of agents reached over TCP.
    #[arg(long, env = "BERTH_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// Shortest run_every a schedule may have, in seconds (IronWorker: 60).
    #[arg(long, env = "BERTH_MIN_SCHEDULE_INTERVAL", default_value_t = 60)]
    pub min_schedule_interval: i64,
    #[command(flatten)]
    pub code_limits: CodeLimitArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Starts berth's whole stack on this machine in the foreground: the task API, \
a local agent, a SQLite store under the data dir, and a default stack (a small image the \
runtimes `sh` and `binary` map to). Prints the URL, a project id and a token, and writes them \
to <data dir>/client.json and to your client config (~/.config/berth/config.json) so that \
`berth code push`, `berth task queue` and friends need no flags. Your client config is only \
written when it is absent or already names this instance (its address, or a token of its \
store): a second instance never redirects it; use it with BERTH_CONFIG=<data dir>/client.json.",
    after_help = "Examples:\n  berth up\n  berth up --listen 0.0.0.0:8380 --data-dir /srv/berth"
)]
pub struct UpArgs {
    /// Address of the task API.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8380")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Shortest run_every a schedule may have, in seconds (IronWorker: 60).
    #[arg(long, env = "BERTH_MIN_SCHEDULE_INTERVAL", default_value_t = 60)]
    pub min_schedule_interval: i64,
    #[command(flatten)]
    pub code_limits: CodeLimitArgs,
    /// Keep the local agent's per-container state on disk instead of the
    /// private tmpfs berth up mounts at <data dir>/agent/run (see
    /// `berth agent --help`, --state-tmpfs).
    #[arg(long)]
    pub state_on_disk: bool,
    #[command(flatten)]
    pub connections: ConnectionArgs,
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

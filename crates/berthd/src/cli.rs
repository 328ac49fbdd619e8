//! berthd's flags (clap). The global ones (`--data-dir`, `--cgroup-parent`,
//! `--verbose`) are berth's own, so that `berth up …` and `berthd up …`
//! take the same command line.

use berth::cli::Global;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod operator;

pub use operator::*;

#[derive(Debug, Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth's daemons and operator commands (berth up|server|agent|project|token|stack run this).",
    long_about = "berthd serves the commands of berth that link the control plane and the host \
agent: `up`, `server` and `agent`, and the operator commands that open the server's database \
directly (`project`, `token`, `stack`). `berth up …` runs `berthd up …`; either spelling works."
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
            Command::Project(a) => a.json(),
            Command::Token(a) => a.json(),
            Command::Stack(a) => a.json(),
            Command::Agent(_) | Command::Server(_) | Command::Up(_) => false,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
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
berth agent --listen 10.0.0.5:7420 --join http://10.0.0.1:8380 --join-token-file /etc/berth/join.token \\\n    \
--name host-5 --labels zone=a,disk=ssd --allocatable cpus=1.5,memory=4g\n  \
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
    /// Labels reported by /v1/node and to the fleet (KEY=VALUE; repeatable,
    /// or comma-separated: --labels zone=a,disk=ssd).
    #[arg(
        long = "label",
        visible_alias = "labels",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// Join the fleet of the server at this URL (http://HOST:PORT; servers
    /// sharing one store may be listed comma separated: the agent moves to
    /// the next when one stops answering) and keep registered with
    /// heartbeats. Needs --join-token-file and --listen.
    #[arg(long, env = "BERTH_JOIN", value_name = "URL")]
    pub join: Option<String>,
    /// File holding the fleet's join token (the server's --join-token-file).
    #[arg(long, env = "BERTH_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// This host's name in the fleet [default: the hostname].
    #[arg(long, env = "BERTH_NODE_NAME")]
    pub name: Option<String>,
    /// The address the server reaches this agent's API at (HOST:PORT)
    /// [default: the --listen address].
    #[arg(long, env = "BERTH_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// What this host offers tasks, e.g. cpus=1.5,memory=4g,disk=20g,pids=5000
    /// [default: all but a tenth of the CPUs (at least 0.1), the memory
    /// ceiling, nine tenths of the disk and of the kernel's pids]. Lets
    /// several agents share one machine in tests.
    #[arg(
        long,
        env = "BERTH_ALLOCATABLE",
        value_name = "cpus=…,memory=…,disk=…,pids=…"
    )]
    pub allocatable: Option<String>,
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
    /// A test and benchmark tool, not a way to run tasks: N simulated
    /// hosts in this process (named NAME-h1 … NAME-hN, labelled
    /// hollow=true) that join the fleet and heartbeat like real agents and
    /// answer the server on --listen, but run nothing: a container "runs"
    /// for its BERTH_HOLLOW_RUN_MS (or its command's first `sleep N`) and
    /// exits 0. Needs --join, --join-token-file and --listen; each host
    /// offers --allocatable (default cpus=4,memory=16g,disk=100g,pids=10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub hollow: Option<u32>,
    /// With --hollow: images every hollow host holds from the start
    /// (comma separated), so codes naming them place without an upload.
    #[arg(long, value_delimiter = ',', requires = "hollow", value_name = "REFS")]
    pub hollow_images: Vec<String>,
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
    /// File holding the fleet's join token: hosts presenting it may join
    /// (`berth agent --join`). Without it the server takes no joins.
    #[arg(long, env = "BERTH_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Shortest run_every a schedule may have, in seconds (IronWorker: 60).
    #[arg(long, env = "BERTH_MIN_SCHEDULE_INTERVAL", default_value_t = 60)]
    pub min_schedule_interval: i64,
    #[command(flatten)]
    pub code_limits: CodeLimitArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// What `berth server ls` calls this server (default: the host's name
    /// and the port it listens on).
    #[arg(long, env = "BERTH_SERVER_NAME")]
    pub name: Option<String>,
    /// The URL clients and other servers reach this server's API at, as
    /// `berth server ls` shows it (default: http:// and --listen).
    #[arg(long, env = "BERTH_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,
    /// How long the dispatch lease lasts unrenewed: after the leading
    /// server dies, another dispatches within about this long. Servers
    /// sharing a database should agree on it.
    #[arg(
        long,
        env = "BERTH_LEASE_TTL",
        default_value = "3s",
        value_name = "DURATION"
    )]
    pub lease_ttl: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn takes_berths_global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "berth",
            "--data-dir",
            "/d",
            "up",
            "--cgroup-parent",
            "p",
            "--listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(cli.global.data_dir, PathBuf::from("/d"));
        assert_eq!(cli.global.cgroup_parent, "p");
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.listen.to_string(), "127.0.0.1:1");
    }
}

//! Flags of the operator commands (`project`, `token`, `stack`): they open
//! the control plane's database directly, as its owner.

use super::DatabaseArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(
    long_about = "Manage projects, the unit of isolation of the task API: every code, task and \
schedule belongs to one, and a token opens exactly one. Talks to the server's database \
directly (--database, BERTH_DATABASE), so it runs where the server's state is.",
    after_help = "Examples:\n  berth project create billing\n  \
berth project create ci --json --database sqlite:///srv/berth/berth.db\n  berth project ls"
)]
pub struct ProjectArgs {
    #[command(subcommand)]
    pub command: ProjectCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ProjectCommand {
    /// Create a project and its first token (the secret is shown once).
    Create {
        /// A name for people; ids are generated.
        name: String,
        /// Print {"id", "name", "token"}.
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List projects.
    #[command(alias = "list")]
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
#[command(
    long_about = "Manage a project's API tokens. A token's secret is shown once, when it is \
created; the server keeps only its SHA-256. Revoke by the token's id (shown by `ls`).",
    after_help = "Examples:\n  berth token create 6650e1a2c3d4e5f601234567 --name deploy\n  \
berth token ls 6650e1a2c3d4e5f601234567\n  berth token revoke 6650e1b9aa00bb11cc22dd33\n  \
berth token create --operator --name ops"
)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TokenCommand {
    /// Create a token for a project (or, with --operator, for the fleet's
    /// operators) and print its secret (once).
    Create {
        /// The project the token opens.
        #[arg(required_unless_present = "operator")]
        project_id: Option<String>,
        /// An operator token instead: it opens the fleet's hosts (`berth
        /// node …`, /v1/nodes) and no project's data.
        #[arg(long, conflicts_with = "project_id")]
        operator: bool,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List a project's tokens, or with --operator the operator tokens
    /// (never their secrets).
    #[command(alias = "list")]
    Ls {
        #[arg(required_unless_present = "operator")]
        project_id: Option<String>,
        /// The operator tokens.
        #[arg(long, conflicts_with = "project_id")]
        operator: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token by its id: requests bearing it are refused from now on.
    Revoke {
        token_id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
#[command(
    long_about = "Manage stacks: the images classic IronWorker uploads run in. A code pushed \
with --runtime RT and --file F runs in the image RT maps to, with the command template's \
{file} replaced by F. Default templates: sh → sh {file}, binary → ./{file}, python → python3 \
{file}, node → node {file}, ruby → ruby {file}, php → php {file}.",
    after_help = "Examples:\n  berth stack map sh busybox\n  \
berth stack map python python:3.12-slim\n  \
berth stack map lua lua:5.4 --command 'lua {file}'\n  berth stack ls\n  berth stack rm lua"
)]
pub struct StackArgs {
    #[command(subcommand)]
    pub command: StackCommand,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum StackCommand {
    /// Map a runtime name to an image (replacing an existing mapping).
    Map {
        /// The runtime name clients send (sh, binary, python, …).
        runtime: String,
        /// Image on the agents, NAME[:TAG].
        image: String,
        /// Command template; {file} is the code's file name
        /// [default: by runtime, see above; required for other runtimes].
        #[arg(long, value_name = "TEMPLATE")]
        command: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a runtime's mapping.
    #[command(alias = "remove")]
    Rm {
        runtime: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

impl ProjectArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            ProjectCommand::Create { json, .. } | ProjectCommand::Ls { json, .. } => *json,
        }
    }
}

impl TokenArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            TokenCommand::Create { json, .. }
            | TokenCommand::Ls { json, .. }
            | TokenCommand::Revoke { json, .. } => *json,
        }
    }
}

impl StackArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            StackCommand::Map { json, .. }
            | StackCommand::Ls { json, .. }
            | StackCommand::Rm { json, .. } => *json,
        }
    }
}

//! `tracedpipeline-operator`: CLI entry point (thin; logic lives in the library).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use tracedpipeline_operator::{
    render::{self, ModeState, RenderError},
    run::{RunArgs, RunError},
};

#[derive(Debug, Parser)]
#[command(name = "tracedpipeline-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the TracedPipeline CustomResourceDefinition (YAML).
    Crd,
    /// Print every object the operator would create for a TracedPipeline file (multi-document
    /// YAML). Pure: no cluster is contacted.
    Render {
        /// TracedPipeline manifest (YAML).
        file: PathBuf,
        /// Which step of the tracing-mode switch to render.
        #[arg(long, value_enum, default_value_t = ModeStateArg::Settled)]
        mode_state: ModeStateArg,
    },
    /// Run the operator: reconcile TracedPipelines in the cluster (leader-elected).
    Run(RunArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeStateArg {
    /// No switch in progress: everything wired to `spec.tracing.mode`.
    Settled,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Run(#[from] RunError),
}

async fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Run(args) => {
            tracedpipeline_operator::run::run(args).await?;
            Ok(String::new())
        }
        Command::Crd => Ok(render::crd_yaml()?),
        Command::Render { file, mode_state } => {
            let yaml = std::fs::read_to_string(&file).map_err(|source| CliError::Read {
                path: file.clone(),
                source,
            })?;
            let state = match mode_state {
                ModeStateArg::Settled => ModeState::Settled,
            };
            Ok(render::render(render::parse(&yaml)?, state)?)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Print the whole cause chain: "not a valid TracedPipeline: <parser detail>".
            let mut msg = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

//! `finerank models`: the registry from the command line.
use std::process::ExitCode;

use clap::Subcommand;
use finerank_engine::{default_model_dir, DEFAULT_MODEL};

use crate::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// The default model and every fine-tuned one (the default action).
    List,
    /// One fine-tuned model's record as JSON.
    Show { id: String },
    /// Remove a fine-tuned model.
    Delete { id: String },
}

pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let registry = ctx.registry()?;
    match a.action.unwrap_or(Action::List) {
        Action::List => {
            println!("{:<40} {:<14} {:<24} name / base", "id", "kind", "created");
            println!(
                "{:<40} {:<14} {:<24} {}",
                DEFAULT_MODEL,
                "default",
                "-",
                default_model_dir().display()
            );
            for r in registry.list()? {
                let kind = serde_json::to_value(r.kind)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                println!(
                    "{:<40} {:<14} {:<24} {} / {}",
                    r.id, kind, r.created_at, r.name, r.base_model
                );
            }
        }
        Action::Show { id } => match registry.get(&id)? {
            Some((record, dir)) => {
                println!("{}", serde_json::to_string_pretty(&record)?);
                eprintln!("checkpoint: {}", dir.display());
            }
            None => anyhow::bail!("no fine-tuned model {id}; `finerank models` lists them"),
        },
        Action::Delete { id } => match registry.delete(&id)? {
            true => eprintln!("deleted {id}"),
            false => anyhow::bail!("no fine-tuned model {id}; `finerank models` lists them"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

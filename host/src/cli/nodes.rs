use std::process::ExitCode;

use clap::Args;

use super::{native_registry, DataArgs};

#[derive(Args)]
pub struct NodesArgs {
    /// Print the full object_info JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

pub fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let registry = native_registry(&args.data.paths());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&registry.object_info())?);
        return Ok(ExitCode::SUCCESS);
    }
    for schema in registry.schemas() {
        let inputs: Vec<String> = schema
            .inputs
            .iter()
            .map(|i| format!("{}:{}", i.name, i.kind.type_name()))
            .collect();
        let outputs: Vec<&str> = schema
            .outputs
            .iter()
            .map(|o| o.data_type.as_str())
            .collect();
        println!(
            "{:<28} {:<22} ({}) -> ({})",
            schema.name,
            schema.category,
            inputs.join(", "),
            outputs.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use clap::Args;

use super::{CustomNodeArgs, DataArgs, NodeSource};

#[derive(Args)]
pub struct NodesArgs {
    /// Print the full object_info JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    custom: CustomNodeArgs,
}

pub fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let (registry, _) = NodeSource::new(args.data.paths(), &args.custom)?.registry();
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

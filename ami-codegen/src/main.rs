//! `cargo run -p ami-codegen`: regenerates `ami-types/src/generated/` from the catalog.
//! With `--check`, writes nothing and fails when the committed files are stale.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    match run(check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ami-codegen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(check: bool) -> Result<(), Box<dyn std::error::Error>> {
    let path = ami_codegen::catalog_path();
    let catalog = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let dir = ami_codegen::output_dir();
    for file in ami_codegen::generate(&catalog)? {
        let target = dir.join(file.name);
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current == file.text {
            continue;
        }
        if check {
            return Err(format!(
                "{} is stale: run cargo run -p ami-codegen",
                target.display()
            )
            .into());
        }
        std::fs::write(&target, &file.text)?;
        println!("wrote {}", target.display());
    }
    Ok(())
}
